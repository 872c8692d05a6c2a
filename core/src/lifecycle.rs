//! The state machines beside the payment's (`state.rs`), each a table of
//! allowed edges. Refunds and disputes: what happens to money after a payment
//! succeeded; their moves come only from the provider (its answer or a
//! webhook), so a move the table lacks is a late report: recorded, not applied.
//! Subscriptions and invoices: billing's own lifecycles, which a trigger
//! enforces on every change of status (a move the table lacks is an error).

/// A status set and its allowed edges; everything not listed is stale.
pub struct Machine {
    pub name: &'static str,
    pub statuses: &'static [&'static str],
    edges: &'static [(&'static str, &'static [&'static str])],
}

/// What a reported status does to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Move {
    Apply,
    /// Already in that status.
    Noop,
    /// No edge from the current status: recorded, not applied.
    Stale,
}

impl Move {
    /// The outcome word (`payments.allowed_values()`, kind `outcome`).
    pub fn as_str(self) -> &'static str {
        match self {
            Move::Apply => "applied",
            Move::Noop => "noop",
            Move::Stale => "stale",
        }
    }
}

impl Machine {
    pub fn is_status(&self, s: &str) -> bool {
        self.statuses.contains(&s)
    }

    /// None when either status is not one of this machine's.
    pub fn decide(&self, from: &str, to: &str) -> Option<Move> {
        if !self.is_status(from) || !self.is_status(to) {
            return None;
        }
        Some(if from == to {
            Move::Noop
        } else if self.edges.iter().any(|(f, tos)| *f == from && tos.contains(&to)) {
            Move::Apply
        } else {
            Move::Stale
        })
    }

    /// The statuses an object can still leave (not final), in the machine's order.
    pub fn open_statuses(&self) -> Vec<&'static str> {
        self.statuses.iter().copied().filter(|s| self.edges.iter().any(|(from, _)| from == s)).collect()
    }

    pub fn edges(&self) -> impl Iterator<Item = (&'static str, &'static str)> {
        self.edges.iter().flat_map(|(from, tos)| tos.iter().map(move |to| (*from, *to)))
    }
}

/// The refund lifecycle (Stripe's; `provider::stripe::refund_status` maps its
/// words). A refund can fail after it succeeded (the bank returned it): Stripe reports
/// `refund.failed` then, and the money is the merchant's again.
pub const REFUND: Machine = Machine {
    name: "refund_status",
    statuses: &["pending", "succeeded", "failed", "canceled"],
    edges: &[("pending", &["succeeded", "failed", "canceled"]), ("succeeded", &["failed"])],
};

/// Stripe's dispute lifecycle. `warning_*` are inquiries (no money withheld
/// yet); `needs_response` and `under_review` hold the disputed amount, `lost`
/// keeps it, `won` returns it.
pub const DISPUTE: Machine = Machine {
    name: "dispute_status",
    statuses: &[
        "warning_needs_response",
        "warning_under_review",
        "warning_closed",
        "needs_response",
        "under_review",
        "won",
        "lost",
    ],
    edges: &[
        ("warning_needs_response", &["warning_under_review", "warning_closed", "needs_response", "under_review"]),
        ("warning_under_review", &["warning_closed", "needs_response", "under_review"]),
        ("needs_response", &["under_review", "won", "lost"]),
        ("under_review", &["won", "lost"]),
    ],
};

/// Stripe's subscription lifecycle. A subscription starts `trialing`, `active` (nothing to pay,
/// or paid at once) or `incomplete` (its first invoice unpaid); a failed renewal makes it
/// `past_due`, and the last failed retry `unpaid` or `canceled` (set_dunning; at once without
/// retries). `canceled` and `incomplete_expired` (its first invoice never paid) are final.
pub const SUBSCRIPTION: Machine = Machine {
    name: "subscription_status",
    statuses: &["trialing", "active", "past_due", "unpaid", "canceled", "incomplete", "incomplete_expired", "paused"],
    edges: &[
        ("trialing", &["active", "past_due", "unpaid", "canceled", "paused"]),
        ("active", &["past_due", "unpaid", "canceled", "paused"]),
        ("past_due", &["active", "unpaid", "canceled"]),
        ("unpaid", &["active", "canceled"]),
        ("incomplete", &["active", "canceled", "incomplete_expired"]),
        ("paused", &["trialing", "active", "canceled"]),
    ],
};

/// Stripe's invoice lifecycle. An invoice is made `open` (or `draft`, not yet final); it is
/// `paid`, or `void` (nothing was owed after all) or `uncollectible` (collection stopped), which a
/// late payment can still settle.
pub const INVOICE: Machine = Machine {
    name: "invoice_status",
    statuses: &["draft", "open", "paid", "void", "uncollectible"],
    edges: &[
        ("draft", &["open", "void"]),
        ("open", &["paid", "void", "uncollectible"]),
        ("uncollectible", &["paid", "void"]),
    ],
};

/// A hold on a customer's credits (two-phase spending, as TigerBeetle's pending transfers):
/// held until settled (the actual amount spent, the rest back), released, or expired. A
/// reserve the credits could not cover is kept as `refused`, so that its retry answers alike.
pub const HOLD: Machine = Machine {
    name: "hold_status",
    statuses: &["held", "settled", "released", "expired", "refused"],
    edges: &[("held", &["settled", "released", "expired"])],
};

/// Every machine by its name (`payments._lifecycle_decision`).
pub const MACHINES: [&Machine; 5] = [&REFUND, &DISPUTE, &SUBSCRIPTION, &INVOICE, &HOLD];

pub fn machine(name: &str) -> Option<&'static Machine> {
    MACHINES.into_iter().find(|m| m.name == name)
}

/// Whether a dispute in this status withholds its amount from the merchant.
pub fn dispute_withholds(status: &str) -> bool {
    matches!(status, "needs_response" | "under_review" | "lost")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ended_subscriptions_and_settled_invoices_stay_so() {
        for end in ["canceled", "incomplete_expired"] {
            assert!(SUBSCRIPTION.statuses.iter().all(|to| SUBSCRIPTION.decide(end, to) != Some(Move::Apply)), "{end}");
        }
        assert_eq!(SUBSCRIPTION.decide("past_due", "active"), Some(Move::Apply));
        assert_eq!(
            SUBSCRIPTION.decide("incomplete", "past_due"),
            Some(Move::Stale),
            "a first invoice is not a renewal"
        );
        for to in INVOICE.statuses {
            assert_ne!(INVOICE.decide("paid", to), Some(Move::Apply), "paid -> {to}");
            assert_ne!(INVOICE.decide("void", to), Some(Move::Apply), "void -> {to}");
        }
        assert_eq!(INVOICE.decide("uncollectible", "paid"), Some(Move::Apply), "a late payment still settles it");
        assert!(MACHINES.iter().all(|m| machine(m.name).is_some()) && machine("payment").is_none());
        assert_eq!(SUBSCRIPTION.open_statuses(), ["trialing", "active", "past_due", "unpaid", "incomplete", "paused"]);
    }

    #[test]
    fn a_refund_settles_once_and_may_fail_after_succeeding() {
        assert_eq!(REFUND.decide("pending", "succeeded"), Some(Move::Apply));
        assert_eq!(REFUND.decide("succeeded", "failed"), Some(Move::Apply));
        assert_eq!(REFUND.decide("succeeded", "succeeded"), Some(Move::Noop));
        assert_eq!(REFUND.decide("succeeded", "pending"), Some(Move::Stale), "a late pending report");
        assert_eq!(REFUND.decide("failed", "succeeded"), Some(Move::Stale), "failed is final");
        assert_eq!(REFUND.decide("canceled", "succeeded"), Some(Move::Stale));
        assert_eq!(REFUND.decide("pending", "refunded"), None);
    }

    #[test]
    fn a_dispute_closes_once_and_only_open_or_lost_ones_withhold() {
        assert_eq!(DISPUTE.decide("needs_response", "under_review"), Some(Move::Apply));
        assert_eq!(DISPUTE.decide("under_review", "won"), Some(Move::Apply));
        assert_eq!(DISPUTE.decide("won", "lost"), Some(Move::Stale));
        assert_eq!(DISPUTE.decide("under_review", "needs_response"), Some(Move::Stale));
        let withholding: Vec<_> = DISPUTE.statuses.iter().filter(|s| dispute_withholds(s)).collect();
        assert_eq!(withholding, [&"needs_response", &"under_review", &"lost"]);
    }

    #[test]
    fn every_edge_names_known_statuses_and_final_ones_have_none() {
        for m in [&REFUND, &DISPUTE] {
            for (from, to) in m.edges() {
                assert!(m.is_status(from) && m.is_status(to), "{} {from} {to}", m.name);
            }
        }
        for done in ["failed", "canceled"] {
            assert!(REFUND.edges().all(|(from, _)| from != done));
        }
    }
}

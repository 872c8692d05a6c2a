//! The payment state machine: one table of allowed edges, shared by every
//! caller. Statuses follow Stripe's PaymentIntent lifecycle plus `failed`.

/// A payment status, in lifecycle order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    RequiresPaymentMethod,
    RequiresConfirmation,
    RequiresAction,
    Processing,
    RequiresCapture,
    Succeeded,
    Canceled,
    Failed,
}

use Status::*;

pub const ALL: [Status; 8] = [
    RequiresPaymentMethod,
    RequiresConfirmation,
    RequiresAction,
    Processing,
    RequiresCapture,
    Succeeded,
    Canceled,
    Failed,
];

/// The allowed edges. Everything not listed is refused; terminal states have none.
/// A decline is final (`failed`, with `last_error`): a retry is a new payment.
const EDGES: &[(Status, &[Status])] = &[
    (
        RequiresPaymentMethod,
        &[RequiresConfirmation, RequiresAction, Processing, RequiresCapture, Succeeded, Canceled, Failed],
    ),
    (RequiresConfirmation, &[RequiresAction, Processing, RequiresCapture, Succeeded, Canceled, Failed]),
    (RequiresAction, &[Processing, RequiresCapture, Succeeded, Canceled, Failed]),
    // Stripe cannot cancel a payment while it is processing.
    (Processing, &[RequiresCapture, Succeeded, Failed]),
    (RequiresCapture, &[Succeeded, Canceled, Failed]),
];

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            RequiresPaymentMethod => "requires_payment_method",
            RequiresConfirmation => "requires_confirmation",
            RequiresAction => "requires_action",
            Processing => "processing",
            RequiresCapture => "requires_capture",
            Succeeded => "succeeded",
            Canceled => "canceled",
            Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        ALL.into_iter().find(|st| st.as_str() == s)
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, Succeeded | Canceled | Failed)
    }

    /// Position in the lifecycle; all terminal states share the last rank.
    pub fn rank(self) -> u8 {
        match self {
            RequiresPaymentMethod => 0,
            RequiresConfirmation => 1,
            RequiresAction => 2,
            Processing => 3,
            RequiresCapture => 4,
            Succeeded | Canceled | Failed => 5,
        }
    }

    pub fn successors(self) -> &'static [Status] {
        EDGES.iter().find(|(from, _)| *from == self).map_or(&[], |(_, to)| to)
    }

    pub fn can_move_to(self, to: Status) -> bool {
        self.successors().contains(&to)
    }
}

/// Who asked for a transition. Provider and webhook reports may arrive late or
/// out of order; API, admin and system calls are commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Api,
    Provider,
    Webhook,
    Admin,
    System,
}

impl Source {
    pub const ALL: [Source; 5] = [Source::Api, Source::Provider, Source::Webhook, Source::Admin, Source::System];

    pub fn as_str(self) -> &'static str {
        match self {
            Source::Api => "api",
            Source::Provider => "provider",
            Source::Webhook => "webhook",
            Source::Admin => "admin",
            Source::System => "system",
        }
    }

    pub fn parse(s: &str) -> Option<Source> {
        Source::ALL.into_iter().find(|src| src.as_str() == s)
    }

    fn is_report(self) -> bool {
        matches!(self, Source::Provider | Source::Webhook)
    }
}

/// What a requested transition does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Move to the new status and record the event.
    Apply,
    /// Already in that status: nothing changes, nothing is recorded.
    Noop,
    /// A provider or webhook report the state machine has no edge for from
    /// the current status: it is older than the payment's state (it would move
    /// it backwards) or contradicts a final one. Recorded, not applied.
    Stale,
    /// A command asking for an edge the table does not have.
    Forbidden,
}

impl Decision {
    /// The word `payments._transition_decision` answers. Released install
    /// scripts run against the current library until `ALTER EXTENSION UPDATE`,
    /// so these words never change (tests/tests/upgrade.rs writes through
    /// 0.1.0's SQL to prove it): `ignore` is how 0.1.0 said stale.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Apply => "apply",
            Decision::Noop => "noop",
            Decision::Stale => "ignore",
            Decision::Forbidden => "forbidden",
        }
    }

    /// The `outcome` a transition reports; None for a refused one.
    pub fn outcome(self) -> Option<&'static str> {
        match self {
            Decision::Apply => Some("applied"),
            Decision::Noop => Some("noop"),
            Decision::Stale => Some("stale"),
            Decision::Forbidden => None,
        }
    }
}

/// The status a new payment starts in: it waits for a payment method, or,
/// with one, for the provider to confirm it.
pub fn initial_status(has_payment_method: bool) -> Status {
    if has_payment_method {
        RequiresConfirmation
    } else {
        RequiresPaymentMethod
    }
}

pub fn decide(from: Status, to: Status, source: Source) -> Decision {
    if from == to {
        Decision::Noop
    } else if from.can_move_to(to) {
        Decision::Apply
    } else if source.is_report() {
        Decision::Stale
    } else {
        Decision::Forbidden
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for st in ALL {
            assert_eq!(Status::parse(st.as_str()), Some(st));
        }
        assert_eq!(Status::parse("paid"), None);
        assert_eq!(Status::parse("Succeeded"), None);
    }

    #[test]
    fn every_edge_of_the_table_is_allowed_and_every_other_pair_is_not() {
        let expected: &[(Status, Status)] = &[
            (RequiresPaymentMethod, RequiresConfirmation),
            (RequiresPaymentMethod, RequiresAction),
            (RequiresPaymentMethod, Processing),
            (RequiresPaymentMethod, RequiresCapture),
            (RequiresPaymentMethod, Succeeded),
            (RequiresPaymentMethod, Canceled),
            (RequiresPaymentMethod, Failed),
            (RequiresConfirmation, RequiresAction),
            (RequiresConfirmation, Processing),
            (RequiresConfirmation, RequiresCapture),
            (RequiresConfirmation, Succeeded),
            (RequiresConfirmation, Canceled),
            (RequiresConfirmation, Failed),
            (RequiresAction, Processing),
            (RequiresAction, RequiresCapture),
            (RequiresAction, Succeeded),
            (RequiresAction, Canceled),
            (RequiresAction, Failed),
            (Processing, RequiresCapture),
            (Processing, Succeeded),
            (Processing, Failed),
            (RequiresCapture, Succeeded),
            (RequiresCapture, Canceled),
            (RequiresCapture, Failed),
        ];
        for from in ALL {
            for to in ALL {
                let allowed = expected.contains(&(from, to));
                assert_eq!(from.can_move_to(to), allowed, "{} -> {}", from.as_str(), to.as_str());
                let api = decide(from, to, Source::Api);
                let want = if from == to {
                    Decision::Noop
                } else if allowed {
                    Decision::Apply
                } else {
                    Decision::Forbidden
                };
                assert_eq!(api, want, "{} -> {}", from.as_str(), to.as_str());
            }
        }
    }

    #[test]
    fn edges_only_move_forward_in_the_lifecycle() {
        for from in ALL {
            for to in from.successors() {
                assert!(to.rank() > from.rank(), "{} -> {}", from.as_str(), to.as_str());
            }
        }
    }

    #[test]
    fn terminal_states_are_never_left() {
        for from in ALL.into_iter().filter(|s| s.is_terminal()) {
            assert!(from.successors().is_empty());
            for to in ALL.into_iter().filter(|t| *t != from) {
                assert_eq!(decide(from, to, Source::Admin), Decision::Forbidden);
                assert_eq!(decide(from, to, Source::Webhook), Decision::Stale);
            }
        }
    }

    #[test]
    fn late_reports_are_stale_while_late_commands_are_forbidden() {
        assert_eq!(decide(Processing, RequiresAction, Source::Webhook), Decision::Stale);
        assert_eq!(decide(Succeeded, Processing, Source::Provider), Decision::Stale);
        assert_eq!(decide(Processing, RequiresAction, Source::Api), Decision::Forbidden);
        assert_eq!(decide(Processing, RequiresAction, Source::System), Decision::Forbidden);
    }

    #[test]
    fn same_status_is_a_noop_for_every_source() {
        for st in ALL {
            for src in Source::ALL {
                assert_eq!(Source::parse(src.as_str()), Some(src));
                assert_eq!(decide(st, st, src), Decision::Noop);
            }
        }
    }

    proptest::proptest! {
        /// Any sequence of requests from any sources: a payment never leaves a
        /// final status and never moves back in its lifecycle.
        #[test]
        fn random_sequences_never_leave_a_final_state_or_move_backwards(
            steps in proptest::collection::vec((0..ALL.len(), 0..Source::ALL.len()), 0..40)
        ) {
            let mut status = RequiresPaymentMethod;
            for (to, source) in steps {
                let (to, source) = (ALL[to], Source::ALL[source]);
                let before = status;
                if decide(status, to, source) == Decision::Apply {
                    status = to;
                }
                proptest::prop_assert!(status.rank() >= before.rank());
                proptest::prop_assert!(!before.is_terminal() || status == before);
            }
        }
    }

    #[test]
    fn a_payment_method_decides_the_initial_status() {
        assert_eq!(initial_status(false), RequiresPaymentMethod);
        assert_eq!(initial_status(true), RequiresConfirmation);
        assert!(!initial_status(true).is_terminal());
    }
}

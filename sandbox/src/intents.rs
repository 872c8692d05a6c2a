//! The sandbox's objects: PaymentIntents, refunds and disputes, and how test
//! payment methods behave. Pure state changes; HTTP, idempotency and webhook delivery
//! live in `mod.rs` and `delivery.rs`.

use std::collections::HashMap;

use serde_json::{json, Value};

use crate::bounded::Bounded;

/// How many intents (and refunds, and stored idempotent answers) the sandbox
/// keeps; older ones are forgotten. With Stripe's field limits an object is at
/// most about 30 KB, so the sandbox stays under about 200 MB.
pub const MAX_OBJECTS: usize = 2_000;

/// A Stripe-shaped answer: HTTP status, body, and the events it caused.
pub struct Outcome {
    pub status: u16,
    pub body: Value,
    pub events: Vec<(&'static str, Value)>,
    /// Whether money moved (a charge), for the per-idempotency-key count.
    pub charged: bool,
}

impl Outcome {
    fn ok(body: Value, events: Vec<(&'static str, Value)>) -> Self {
        Outcome { status: 200, body, events, charged: false }
    }
}

pub fn error(status: u16, kind: &str, code: &str, message: &str, param: Option<&str>) -> Outcome {
    let mut e = json!({ "type": kind, "code": code, "message": message });
    if let Some(p) = param {
        e["param"] = json!(p);
    }
    Outcome { status, body: json!({ "error": e }), events: vec![], charged: false }
}

pub struct Objects {
    pub intents: Bounded<Value>,
    pub refunds: Bounded<Value>,
    pub disputes: Bounded<Value>,
}

impl Default for Objects {
    fn default() -> Self {
        Objects {
            intents: Bounded::new(MAX_OBJECTS),
            refunds: Bounded::new(MAX_OBJECTS),
            disputes: Bounded::new(MAX_OBJECTS),
        }
    }
}

/// Stripe's test payment method whose refunds succeed, then fail (card 4000 0000 0000 5126).
pub const REFUND_FAILS: &str = "pm_card_refundFail";
/// Stripe's test payment method whose payment is disputed after it succeeds (card 4000 0000 0000 0259).
pub const DISPUTED: &str = "pm_card_createDispute";

pub type Params = HashMap<String, String>;

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

pub fn new_id(prefix: &str) -> String {
    payments_core::id::new_token(prefix).expect("the OS has randomness")
}

/// `metadata[key]=value` parameters, within Stripe's limits (50 keys of at
/// most 40 characters, values of at most 500), or Stripe's error.
fn metadata(params: &Params) -> Result<Value, Outcome> {
    let map: serde_json::Map<String, Value> = params
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("metadata[")?.strip_suffix(']')?.to_string(), json!(v))))
        .collect();
    let too_long =
        map.iter().any(|(k, v)| k.chars().count() > 40 || v.as_str().is_some_and(|v| v.chars().count() > 500));
    if map.len() > 50 || too_long {
        return Err(error(
            400,
            "invalid_request_error",
            "parameter_invalid",
            "Metadata can have up to 50 keys, each up to 40 characters long, with values up to 500 characters long.",
            Some("metadata"),
        ));
    }
    Ok(Value::Object(map))
}

impl Objects {
    pub fn create_intent(&mut self, params: &Params) -> Outcome {
        let Some(amount) = params.get("amount").and_then(|a| a.parse::<i64>().ok()).filter(|a| *a > 0) else {
            return error(
                400,
                "invalid_request_error",
                "parameter_missing",
                "Missing required param: amount.",
                Some("amount"),
            );
        };
        let Some(currency) = params.get("currency").filter(|c| c.len() == 3) else {
            return error(
                400,
                "invalid_request_error",
                "parameter_missing",
                "Missing required param: currency.",
                Some("currency"),
            );
        };
        let capture_method = params.get("capture_method").map_or("automatic", String::as_str);
        if !["automatic", "automatic_async", "manual"].contains(&capture_method) {
            return error(
                400,
                "invalid_request_error",
                "parameter_invalid",
                "Invalid capture_method.",
                Some("capture_method"),
            );
        }
        let metadata = match metadata(params) {
            Ok(m) => m,
            Err(e) => return e,
        };
        if params.get("description").is_some_and(|d| d.chars().count() > 1000) {
            return error(
                400,
                "invalid_request_error",
                "parameter_invalid",
                "Invalid string: description must be at most 1000 characters.",
                Some("description"),
            );
        }
        let id = new_id("pi");
        let intent = json!({
            "id": id, "object": "payment_intent", "amount": amount, "amount_capturable": 0, "amount_received": 0,
            "currency": currency.to_ascii_lowercase(), "status": "requires_payment_method",
            "capture_method": capture_method, "confirmation_method": "automatic",
            "client_secret": format!("{id}_secret_{}", new_id("s")), "created": now(), "livemode": false,
            "metadata": metadata, "payment_method": params.get("payment_method"),
            "description": params.get("description"), "customer": params.get("customer"),
            "last_payment_error": null, "next_action": null, "cancellation_reason": null,
            "latest_charge": null,
        });
        self.intents.insert(id.clone(), intent);
        let mut events = vec![];
        if params.get("payment_method").is_some() {
            self.intents.get_mut(&id).unwrap()["status"] = json!("requires_confirmation");
        }
        if params.get("confirm").is_some_and(|c| c == "true") {
            return self.confirm(&id, params);
        }
        let created = self.intents.get(&id).expect("just inserted").clone();
        events.push(("payment_intent.created", created.clone()));
        Outcome::ok(created, events)
    }

    pub fn retrieve(&self, id: &str) -> Outcome {
        match self.intents.get(id) {
            Some(pi) => Outcome::ok(pi.clone(), vec![]),
            None => missing("payment_intent", id),
        }
    }

    /// Confirms with the intent's (or the given) payment method. Test methods:
    /// pm_card_visa and other pm_card_* succeed, pm_card_chargeDeclined is
    /// declined, pm_card_authenticationRequired needs 3-D Secure, and
    /// pm_usBankAccount is asynchronous (processing, then succeeded).
    pub fn confirm(&mut self, id: &str, params: &Params) -> Outcome {
        let Some(pi) = self.intents.get_mut(id) else { return missing("payment_intent", id) };
        if let Some(pm) = params.get("payment_method") {
            pi["payment_method"] = json!(pm);
        }
        let status = pi["status"].as_str().unwrap_or_default().to_string();
        if !["requires_payment_method", "requires_confirmation"].contains(&status.as_str()) {
            return unexpected_state(pi, "confirm");
        }
        let Some(pm) = pi["payment_method"].as_str().map(str::to_string) else {
            return error(
                400,
                "invalid_request_error",
                "payment_intent_unexpected_state",
                "You cannot confirm this PaymentIntent because it's missing a payment method.",
                Some("payment_method"),
            );
        };
        let amount = pi["amount"].clone();
        let manual = pi["capture_method"] == "manual";
        match pm.as_str() {
            "pm_card_chargeDeclined" => {
                pi["status"] = json!("requires_payment_method");
                pi["last_payment_error"] = json!({
                    "type": "card_error", "code": "card_declined", "decline_code": "generic_decline",
                    "message": "Your card was declined.", "payment_method": { "id": pm }
                });
                let intent = pi.clone();
                let mut o = error(402, "card_error", "card_declined", "Your card was declined.", None);
                o.body["error"]["decline_code"] = json!("generic_decline");
                o.body["error"]["payment_intent"] = intent.clone();
                o.events = vec![("payment_intent.payment_failed", intent)];
                o
            }
            "pm_card_authenticationRequired" => {
                pi["status"] = json!("requires_action");
                pi["next_action"] = json!({ "type": "use_stripe_sdk", "use_stripe_sdk": {} });
                Outcome::ok(pi.clone(), vec![("payment_intent.requires_action", pi.clone())])
            }
            "pm_usBankAccount" => {
                pi["status"] = json!("processing");
                let mut o = Outcome::ok(pi.clone(), vec![("payment_intent.processing", pi.clone())]);
                o.charged = true;
                o
            }
            pm if pm.starts_with("pm_card_") => {
                let mut o = if manual {
                    pi["status"] = json!("requires_capture");
                    pi["amount_capturable"] = amount;
                    Outcome::ok(pi.clone(), vec![("payment_intent.amount_capturable_updated", pi.clone())])
                } else {
                    pi["status"] = json!("succeeded");
                    pi["amount_received"] = amount;
                    pi["latest_charge"] = json!(new_id("ch"));
                    Outcome::ok(pi.clone(), vec![("payment_intent.succeeded", pi.clone())])
                };
                o.charged = true;
                o
            }
            other => error(
                400,
                "invalid_request_error",
                "resource_missing",
                &format!("No such PaymentMethod: '{other}'"),
                Some("payment_method"),
            ),
        }
    }

    /// Finishes an asynchronous payment (the end of pm_usBankAccount's processing).
    pub fn settle(&mut self, id: &str) -> Option<(&'static str, Value)> {
        let pi = self.intents.get_mut(id)?;
        if pi["status"] != "processing" {
            return None;
        }
        pi["status"] = json!("succeeded");
        pi["amount_received"] = pi["amount"].clone();
        Some(("payment_intent.succeeded", pi.clone()))
    }

    /// Captures all of the authorization, or `amount_to_capture` of it (the rest is released).
    pub fn capture(&mut self, id: &str, params: &Params) -> Outcome {
        let Some(pi) = self.intents.get_mut(id) else { return missing("payment_intent", id) };
        if pi["status"] != "requires_capture" {
            return unexpected_state(pi, "capture");
        }
        let capturable = pi["amount_capturable"].as_i64().unwrap_or(0);
        let amount = match params.get("amount_to_capture").map(|a| a.parse::<i64>()) {
            None => capturable,
            Some(Ok(a)) if (1..=capturable).contains(&a) => a,
            Some(_) => {
                return error(
                    400,
                    "invalid_request_error",
                    "amount_too_large",
                    "The amount to capture must be a positive integer no greater than the amount capturable.",
                    Some("amount_to_capture"),
                )
            }
        };
        pi["status"] = json!("succeeded");
        pi["amount_received"] = json!(amount);
        pi["amount_capturable"] = json!(0);
        pi["latest_charge"] = json!(new_id("ch"));
        Outcome::ok(pi.clone(), vec![("payment_intent.succeeded", pi.clone())])
    }

    pub fn cancel(&mut self, id: &str, params: &Params) -> Outcome {
        let Some(pi) = self.intents.get_mut(id) else { return missing("payment_intent", id) };
        let cancelable = ["requires_payment_method", "requires_confirmation", "requires_action", "requires_capture"];
        if !cancelable.contains(&pi["status"].as_str().unwrap_or_default()) {
            return unexpected_state(pi, "cancel");
        }
        let reason = params.get("cancellation_reason").map_or("requested_by_customer", String::as_str);
        // Stripe sets `automatic` itself (an expired authorization) and refuses it from callers.
        if !["duplicate", "fraudulent", "requested_by_customer", "abandoned"].contains(&reason) {
            return error(
                400,
                "invalid_request_error",
                "parameter_invalid_string",
                "Invalid cancellation_reason.",
                Some("cancellation_reason"),
            );
        }
        pi["status"] = json!("canceled");
        pi["cancellation_reason"] = json!(reason);
        pi["amount_capturable"] = json!(0);
        Outcome::ok(pi.clone(), vec![("payment_intent.canceled", pi.clone())])
    }

    pub fn create_refund(&mut self, params: &Params) -> Outcome {
        let Some(pi_id) = params.get("payment_intent") else {
            return error(
                400,
                "invalid_request_error",
                "parameter_missing",
                "Missing required param: payment_intent.",
                Some("payment_intent"),
            );
        };
        let Some(pi) = self.intents.get(pi_id) else { return missing("payment_intent", pi_id) };
        if pi["status"] != "succeeded" {
            return error(
                400,
                "invalid_request_error",
                "charge_not_refundable",
                "This PaymentIntent has not succeeded.",
                Some("payment_intent"),
            );
        }
        let received = pi["amount_received"].as_i64().unwrap_or(0);
        let refunded: i64 = self
            .refunds_of(pi_id)
            .filter(|r| r["status"] == "pending" || r["status"] == "succeeded")
            .map(|r| r["amount"].as_i64().unwrap_or(0))
            .sum();
        let amount = match params.get("amount") {
            Some(a) => match a.parse::<i64>() {
                Ok(a) if a > 0 => a,
                _ => {
                    return error(400, "invalid_request_error", "parameter_invalid", "Invalid amount.", Some("amount"))
                }
            },
            None => received - refunded,
        };
        if amount <= 0 || amount > received - refunded {
            return error(
                400,
                "invalid_request_error",
                "amount_too_large",
                "Refund amount is greater than the unrefunded amount.",
                Some("amount"),
            );
        }
        let metadata = match metadata(params) {
            Ok(m) => m,
            Err(e) => return e,
        };
        let reason = params.get("reason").map(String::as_str);
        if reason.is_some_and(|r| !["duplicate", "fraudulent", "requested_by_customer"].contains(&r)) {
            return error(400, "invalid_request_error", "parameter_invalid_string", "Invalid reason.", Some("reason"));
        }
        // Settled later (settle_refund); a refundFail card's refund succeeds first, as on Stripe.
        let status = if pi["payment_method"] == REFUND_FAILS { "succeeded" } else { "pending" };
        let refund = json!({
            "id": new_id("re"), "object": "refund", "amount": amount, "currency": pi["currency"],
            "payment_intent": pi_id, "charge": pi["latest_charge"], "status": status, "reason": reason,
            "failure_reason": null, "created": now(), "metadata": metadata,
        });
        self.refunds.insert(refund["id"].as_str().unwrap().to_string(), refund.clone());
        Outcome::ok(refund.clone(), vec![("refund.created", refund)])
    }

    pub fn retrieve_refund(&self, id: &str) -> Outcome {
        match self.refunds.get(id) {
            Some(r) => Outcome::ok(r.clone(), vec![]),
            None => missing("refund", id),
        }
    }

    /// A page of intents or refunds (Stripe's list: newest first; `created[gte|gt|lte|lt]`,
    /// `limit` 1 to 100, default 10, `starting_after`).
    pub fn list(&self, refunds: bool, params: &Params) -> Outcome {
        let bound = |key: &str| params.get(key).and_then(|v| v.parse::<i64>().ok());
        let limit = match params.get("limit").map(|l| l.parse::<usize>()) {
            None => 10,
            Some(Ok(l)) if (1..=100).contains(&l) => l,
            Some(_) => {
                return error(
                    400,
                    "invalid_request_error",
                    "parameter_invalid_integer",
                    "Invalid limit.",
                    Some("limit"),
                )
            }
        };
        let store = if refunds { &self.refunds } else { &self.intents };
        let mut all: Vec<&Value> = store
            .iter()
            .map(|(_, o)| o)
            .filter(|o| {
                let c = o["created"].as_i64().unwrap_or(0);
                bound("created[gte]").is_none_or(|b| c >= b)
                    && bound("created[gt]").is_none_or(|b| c > b)
                    && bound("created[lte]").is_none_or(|b| c <= b)
                    && bound("created[lt]").is_none_or(|b| c < b)
            })
            .collect();
        let key = |o: &&Value| (o["created"].as_i64().unwrap_or(0), o["id"].as_str().unwrap_or_default().to_string());
        all.sort_by_key(|o| std::cmp::Reverse(key(o)));
        let start = match params.get("starting_after") {
            None => 0,
            Some(after) => match all.iter().position(|o| o["id"] == after.as_str()) {
                Some(i) => i + 1,
                None => return missing(if refunds { "refund" } else { "payment_intent" }, after),
            },
        };
        let page: Vec<Value> = all.iter().skip(start).take(limit).map(|o| (*o).clone()).collect();
        let has_more = start + page.len() < all.len();
        let url = if refunds { "/v1/refunds" } else { "/v1/payment_intents" };
        Outcome::ok(json!({ "object": "list", "url": url, "has_more": has_more, "data": page }), vec![])
    }

    fn refunds_of<'a>(&'a self, pi_id: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.refunds.iter().map(|(_, r)| r).filter(move |r| r["payment_intent"] == pi_id)
    }

    /// The intent's charge as Stripe shows it in charge.* events, with its refunds listed.
    fn charge(&self, pi: &Value) -> Value {
        let pi_id = pi["id"].as_str().unwrap_or_default();
        let refunds: Vec<Value> = self.refunds_of(pi_id).cloned().collect();
        let refunded: i64 =
            refunds.iter().filter(|r| r["status"] == "succeeded").map(|r| r["amount"].as_i64().unwrap_or(0)).sum();
        json!({
            "id": pi["latest_charge"], "object": "charge", "amount": pi["amount_received"], "currency": pi["currency"],
            "payment_intent": pi_id, "amount_refunded": refunded, "refunded": refunded == pi["amount_received"],
            "refunds": { "object": "list", "data": refunds, "has_more": false },
        })
    }

    /// The bank's answer to a refund, some time after it was made: a pending
    /// refund succeeds; a refundFail card's succeeded refund fails.
    pub fn settle_refund(&mut self, id: &str) -> Vec<(&'static str, Value)> {
        let Some(refund) = self.refunds.get(id).cloned() else { return vec![] };
        let pi = self.intents.get(refund["payment_intent"].as_str().unwrap_or_default()).cloned().unwrap_or_default();
        let fails = pi["payment_method"] == REFUND_FAILS;
        let (status, kind) = match refund["status"].as_str() {
            Some("pending") if !fails => ("succeeded", "refund.updated"),
            Some("pending" | "succeeded") if fails => ("failed", "refund.failed"),
            _ => return vec![],
        };
        let r = self.refunds.get_mut(id).expect("read above");
        r["status"] = json!(status);
        if status == "failed" {
            r["failure_reason"] = json!("expired_or_canceled_card");
        }
        let refund = r.clone();
        let mut events = vec![(kind, refund)];
        if status == "succeeded" {
            events.push(("charge.refunded", self.charge(&pi)));
        }
        events
    }

    /// A disputed card's chargeback, some time after the payment succeeded.
    pub fn open_dispute(&mut self, pi_id: &str) -> Vec<(&'static str, Value)> {
        let Some(pi) = self.intents.get(pi_id) else { return vec![] };
        let dispute = json!({
            "id": new_id("dp"), "object": "dispute", "amount": pi["amount_received"], "currency": pi["currency"],
            "charge": pi["latest_charge"], "payment_intent": pi_id, "reason": "fraudulent", "status": "needs_response",
            "evidence": { "uncategorized_text": null }, "evidence_details": { "due_by": now() + 7 * 86_400 },
            "created": now(), "livemode": false,
        });
        self.disputes.insert(dispute["id"].as_str().unwrap().to_string(), dispute.clone());
        vec![("charge.dispute.created", dispute)]
    }

    pub fn retrieve_dispute(&self, id: &str) -> Outcome {
        match self.disputes.get(id) {
            Some(d) => Outcome::ok(d.clone(), vec![]),
            None => missing("dispute", id),
        }
    }

    /// Submits evidence (Stripe's test texts `winning_evidence` and `losing_evidence` decide the outcome).
    pub fn update_dispute(&mut self, id: &str, params: &Params) -> Outcome {
        let Some(d) = self.disputes.get_mut(id) else { return missing("dispute", id) };
        if d["status"] != "needs_response" {
            return error(
                400,
                "invalid_request_error",
                "dispute_already_submitted",
                "This dispute is already under review or closed.",
                None,
            );
        }
        if let Some(text) = params.get("evidence[uncategorized_text]") {
            d["evidence"]["uncategorized_text"] = json!(text);
        }
        d["status"] = json!("under_review");
        Outcome::ok(d.clone(), vec![("charge.dispute.updated", d.clone())])
    }

    /// Accepts a dispute: it is lost.
    pub fn close_dispute(&mut self, id: &str) -> Outcome {
        let Some(d) = self.disputes.get_mut(id) else { return missing("dispute", id) };
        if !["needs_response", "under_review"].contains(&d["status"].as_str().unwrap_or_default()) {
            return error(
                400,
                "invalid_request_error",
                "dispute_already_closed",
                "This dispute is already closed.",
                None,
            );
        }
        d["status"] = json!("lost");
        Outcome::ok(d.clone(), vec![("charge.dispute.closed", d.clone())])
    }

    /// The bank's decision on a dispute under review.
    pub fn decide_dispute(&mut self, id: &str) -> Vec<(&'static str, Value)> {
        let Some(d) = self.disputes.get_mut(id) else { return vec![] };
        if d["status"] != "under_review" {
            return vec![];
        }
        let won = d["evidence"]["uncategorized_text"] == "winning_evidence";
        d["status"] = json!(if won { "won" } else { "lost" });
        vec![("charge.dispute.closed", d.clone())]
    }
}

fn missing(object: &str, id: &str) -> Outcome {
    error(404, "invalid_request_error", "resource_missing", &format!("No such {object}: '{id}'"), Some("id"))
}

fn unexpected_state(pi: &Value, action: &str) -> Outcome {
    let mut o = error(
        400,
        "invalid_request_error",
        "payment_intent_unexpected_state",
        &format!(
            "You cannot {action} this PaymentIntent because it has a status of {}.",
            pi["status"].as_str().unwrap_or("?")
        ),
        None,
    );
    o.body["error"]["payment_intent"] = pi.clone();
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Params {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn create(o: &mut Objects, pm: &str, capture: &str) -> Outcome {
        o.create_intent(&params(&[
            ("amount", "1000"),
            ("currency", "usd"),
            ("payment_method", pm),
            ("confirm", "true"),
            ("capture_method", capture),
            ("metadata[payment_id]", "pay_1"),
        ]))
    }

    #[test]
    fn test_cards_behave_like_stripes() {
        let mut o = Objects::default();
        let ok = create(&mut o, "pm_card_visa", "automatic");
        assert_eq!((ok.status, ok.body["status"].as_str(), ok.charged), (200, Some("succeeded"), true));
        assert_eq!(ok.body["metadata"]["payment_id"], "pay_1");
        assert_eq!(ok.events[0].0, "payment_intent.succeeded");

        let declined = create(&mut o, "pm_card_chargeDeclined", "automatic");
        assert_eq!(declined.status, 402);
        assert_eq!(declined.body["error"]["payment_intent"]["last_payment_error"]["code"], "card_declined");
        assert!(!declined.charged);

        let sca = create(&mut o, "pm_card_authenticationRequired", "automatic");
        assert_eq!(sca.body["status"], "requires_action");

        let manual = create(&mut o, "pm_card_visa", "manual");
        assert_eq!(manual.body["status"], "requires_capture");
        let id = manual.body["id"].as_str().unwrap().to_string();
        assert_eq!(o.capture(&id, &params(&[])).body["status"], "succeeded");
        assert_eq!(o.capture(&id, &params(&[])).status, 400);

        let slow = create(&mut o, "pm_usBankAccount", "automatic");
        let id = slow.body["id"].as_str().unwrap().to_string();
        assert_eq!(slow.body["status"], "processing");
        assert_eq!(o.settle(&id).unwrap().1["status"], "succeeded");
        assert!(o.settle(&id).is_none());
    }

    #[test]
    fn refunds_never_exceed_what_was_received() {
        let mut o = Objects::default();
        let pi = create(&mut o, "pm_card_visa", "automatic").body["id"].as_str().unwrap().to_string();
        let r = o.create_refund(&params(&[("payment_intent", &pi), ("amount", "600")]));
        assert_eq!(r.status, 200);
        assert_eq!(o.create_refund(&params(&[("payment_intent", &pi), ("amount", "500")])).status, 400);
        assert_eq!(o.create_refund(&params(&[("payment_intent", &pi)])).body["amount"], 400);
        assert_eq!(o.retrieve_refund(r.body["id"].as_str().unwrap()).status, 200);
    }

    #[test]
    fn refunds_settle_later_and_a_refund_fail_card_fails_after_succeeding() {
        let mut o = Objects::default();
        let pi = create(&mut o, "pm_card_visa", "automatic").body["id"].as_str().unwrap().to_string();
        let r = o.create_refund(&params(&[("payment_intent", &pi), ("amount", "600")]));
        assert_eq!(r.body["status"], "pending");
        let settled = o.settle_refund(r.body["id"].as_str().unwrap());
        assert_eq!(settled.iter().map(|e| e.0).collect::<Vec<_>>(), ["refund.updated", "charge.refunded"]);
        assert_eq!(settled[1].1["amount_refunded"], 600);
        assert!(o.settle_refund(r.body["id"].as_str().unwrap()).is_empty(), "settled once");

        let pi = create(&mut o, REFUND_FAILS, "automatic").body["id"].as_str().unwrap().to_string();
        let r = o.create_refund(&params(&[("payment_intent", &pi)]));
        assert_eq!(r.body["status"], "succeeded");
        let failed = o.settle_refund(r.body["id"].as_str().unwrap());
        assert_eq!((failed[0].0, &failed[0].1["status"]), ("refund.failed", &json!("failed")));
        // A failed refund gives its amount back to refund.
        assert_eq!(o.create_refund(&params(&[("payment_intent", &pi)])).body["amount"], 1000);
    }

    #[test]
    fn a_disputed_card_is_won_or_lost_by_its_evidence() {
        let mut o = Objects::default();
        for (text, end) in [("winning_evidence", "won"), ("losing_evidence", "lost")] {
            let pi = create(&mut o, DISPUTED, "automatic").body["id"].as_str().unwrap().to_string();
            let opened = o.open_dispute(&pi);
            assert_eq!((opened[0].0, &opened[0].1["status"]), ("charge.dispute.created", &json!("needs_response")));
            let id = opened[0].1["id"].as_str().unwrap().to_string();
            let updated = o.update_dispute(&id, &params(&[("evidence[uncategorized_text]", text)]));
            assert_eq!(updated.body["status"], "under_review");
            assert_eq!(o.decide_dispute(&id)[0].1["status"], end);
            assert_eq!(o.close_dispute(&id).status, 400, "closed once");
        }
    }

    #[test]
    fn lists_page_newest_first_within_the_created_window() {
        let mut o = Objects::default();
        for _ in 0..3 {
            create(&mut o, "pm_card_visa", "automatic");
        }
        let now = now();
        let window = [("created[gte]", (now - 60).to_string()), ("created[lt]", (now + 60).to_string())];
        let first = o.list(false, &params(&[(window[0].0, &window[0].1), (window[1].0, &window[1].1), ("limit", "2")]));
        assert_eq!((first.body["data"].as_array().unwrap().len(), &first.body["has_more"]), (2, &json!(true)));
        let after = first.body["data"][1]["id"].as_str().unwrap().to_string();
        let rest = o.list(false, &params(&[("limit", "2"), ("starting_after", &after)]));
        assert_eq!((rest.body["data"].as_array().unwrap().len(), &rest.body["has_more"]), (1, &json!(false)));
        let later = (now + 60).to_string();
        assert_eq!(o.list(false, &params(&[("created[gte]", &later)])).body["data"], json!([]));
        assert_eq!(o.list(true, &params(&[("limit", "0")])).status, 400);
    }

    #[test]
    fn bad_requests_get_stripe_errors() {
        let mut o = Objects::default();
        assert_eq!(o.create_intent(&params(&[("currency", "usd")])).body["error"]["param"], "amount");
        assert_eq!(create(&mut o, "card_bogus", "automatic").body["error"]["code"], "resource_missing");
        assert_eq!(o.retrieve("pi_nope").status, 404);
    }
}

"""The official Stripe Python SDK against the sandbox (api_base). Prints JSON."""

import json
import sys
import time
import uuid

import stripe

stripe.api_base = sys.argv[1]
stripe.api_key = sys.argv[2]
stripe.max_network_retries = 0

key = str(uuid.uuid4())
pi = stripe.PaymentIntent.create(
    amount=2000, currency="usd", payment_method="pm_card_visa", confirm=True,
    metadata={"order": "42"}, idempotency_key=key,
)
again = stripe.PaymentIntent.create(
    amount=2000, currency="usd", payment_method="pm_card_visa", confirm=True,
    metadata={"order": "42"}, idempotency_key=key,
)
retrieved = stripe.PaymentIntent.retrieve(pi.id)
try:
    stripe.PaymentIntent.create(amount=500, currency="usd", payment_method="pm_card_chargeDeclined", confirm=True)
    declined = None
except stripe.CardError as e:
    declined = e.code
refund = stripe.Refund.create(payment_intent=pi.id, amount=500, reason="requested_by_customer")
settled = refund
for _ in range(100):  # the sandbox settles refunds asynchronously, as the banks behind Stripe do
    settled = stripe.Refund.retrieve(refund.id)
    if settled.status != "pending":
        break
    time.sleep(0.1)
try:
    stripe.Refund.create(payment_intent=pi.id, amount=1600)
    too_much = None
except stripe.InvalidRequestError as e:
    too_much = e.code
held = stripe.PaymentIntent.create(amount=4999, currency="usd", payment_method="pm_card_visa", confirm=True,
                                   capture_method="manual")
captured = stripe.PaymentIntent.capture(held.id, amount_to_capture=3000)
kept = stripe.PaymentIntent.create(amount=1000, currency="usd", payment_method="pm_card_visa", confirm=True,
                                   capture_method="manual")
canceled = stripe.PaymentIntent.cancel(kept.id, cancellation_reason="abandoned")
print(json.dumps({
    "held": held.status,
    "partial_capture": [captured.status, captured.amount_received, captured.amount_capturable],
    "canceled": [canceled.status, canceled.cancellation_reason],
    "created": pi.status,
    "retrieved": retrieved.status,
    "replayed_same_id": again.id == pi.id,
    "declined_code": declined,
    "refund": [refund.status, refund.reason, settled.status],
    "refund_too_much": too_much,
}))

"""Independent oracle: webhook signatures made by the official Python packages.

Prints a JSON list of signed messages over random bodies, made by `stripe`
(Stripe-Signature) and `standardwebhooks` (Standard Webhooks). The end-to-end
tests check that payments.verify_webhook_signature accepts every one of them
and rejects any one-byte change.

usage: python sign_webhooks.py COUNT SEED
"""

import base64
import datetime
import json
import random
import string
import sys

import standardwebhooks
import stripe


def random_body(rng: random.Random) -> str:
    # Any text, including non-ASCII and JSON-significant characters.
    alphabet = string.printable + "éß€漢字🙂\"\\{}"
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 400)))


def main() -> None:
    count, seed = int(sys.argv[1]), int(sys.argv[2])
    rng = random.Random(seed)
    out = []
    for i in range(count):
        body = random_body(rng)
        timestamp = rng.randint(1_500_000_000, 2_000_000_000)
        if i % 2 == 0:
            secret = "whsec_" + "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(32))
            header = stripe.WebhookSignature.generate_signature_header(body, secret, timestamp=timestamp)
            headers = {"Stripe-Signature": header}
            scheme = "stripe"
        else:
            secret = "whsec_" + base64.b64encode(rng.randbytes(24)).decode()
            msg_id = "msg_" + "".join(rng.choice(string.ascii_letters) for _ in range(20))
            signer = standardwebhooks.Webhook(secret)
            when = datetime.datetime.fromtimestamp(timestamp, tz=datetime.timezone.utc)
            signature = signer.sign(msg_id, when, body)
            headers = {"webhook-id": msg_id, "webhook-timestamp": str(timestamp), "webhook-signature": signature}
            scheme = "standard"
        out.append({"scheme": scheme, "secret": secret, "headers": headers, "body": body, "timestamp": timestamp})
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()

"""The official MCP Python SDK as the client of the gateway's MCP server (tests/tests/mcp.rs runs it).

Arguments: the /mcp URL, a read-only API key, a read-write API key, the gateway
binary, the database URL (for `payments-gateway mcp` over stdio), a customer
with a paid payment and a plan granting feature `calls`, the payment id, a meter,
a read-write key bound to another customer, the customer's subscription and a coupon.
Prints a JSON report as its last line; any failed check exits non-zero.
"""
import asyncio
import json
import sys
from datetime import datetime, timedelta, timezone

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamablehttp_client
from pydantic import AnyUrl

url, read_key, write_key, gateway_bin, database_url, customer, payment, meter, stranger_key, subscription, coupon = \
    sys.argv[1:12]
TOOLS = {"customer_status", "balance", "get_payment", "list_payments", "usage_summary", "consume", "record_usage",
         "reserve", "settle", "release", "apply_coupon", "preview_invoice"}
report = {}


def payload(result):
    """A tool's JSON answer (its one text content)."""
    return json.loads(result.content[0].text)


async def http_session(key, work):
    async with streamablehttp_client(url, headers={"Authorization": f"Bearer {key}"}) as (read, write, _):
        async with ClientSession(read, write) as session:
            await session.initialize()
            return await work(session)


async def writer(session):
    tools = await session.list_tools()
    report["tools"] = sorted(t.name for t in tools.tools)
    assert set(report["tools"]) == TOOLS, report["tools"]

    status = payload(await session.call_tool("customer_status", {"customer_id": customer}))
    assert status["has_paid"] is True and status["active_subscription"] is True, status
    calls = next(e for e in status["entitlements"] if e["feature"] == "calls")
    report["remaining_before"] = calls["remaining"]

    report["balance"] = payload(await session.call_tool("balance", {"customer_id": customer}))["data"]
    # Two-phase spending: set 200 aside (twice: a retry), spend 150 of it, the rest back.
    held = payload(await session.call_tool("reserve", {"customer_id": customer, "amount": 200, "unit": "tokens",
                                                       "request_id": "agent-hold-1"}))
    again = payload(await session.call_tool("reserve", {"customer_id": customer, "amount": 200, "unit": "tokens",
                                                        "request_id": "agent-hold-1"}))
    assert held["allowed"] is True and again["hold_id"] == held["hold_id"], (held, again)
    report["hold"] = held["hold_id"]
    settled = payload(await session.call_tool("settle", {"hold_id": held["hold_id"], "amount": "150"}))
    report["settled"] = [settled["status"], settled["spent"], settled["released"], settled["outcome"]]
    released = await session.call_tool("release", {"hold_id": held["hold_id"]})
    report["release_after_settle"] = payload(released)["error"]["code"] if released.isError else "allowed"
    report["balance_after"] = payload(await session.call_tool("balance", {"customer_id": customer}))["data"]
    # A coupon for the subscription (a retry replays it), and the next invoice with it.
    applied = [payload(await session.call_tool("apply_coupon", {"subscription_id": subscription, "code": coupon}))
               for _ in range(2)]
    report["coupon"] = [a["outcome"] for a in applied] + [applied[0]["coupon"]]
    preview = payload(await session.call_tool("preview_invoice", {"subscription_id": subscription}))
    report["preview"] = [preview["coupon"], preview["total"], preview["lines"][0]["kind"]]

    got = payload(await session.call_tool("get_payment", {"payment_id": payment}))
    assert got["id"] == payment and got["status"] == "succeeded" and got["amount"] == "12.50", got
    page = payload(await session.call_tool("list_payments", {"customer_id": customer, "limit": 5}))
    assert [p["id"] for p in page["data"]] == [payment] and page["has_more"] is False, page

    first = payload(await session.call_tool("consume", {"customer_id": customer, "feature": "calls",
                                                        "quantity": "3", "request_id": "agent-req-1"}))
    retry = payload(await session.call_tool("consume", {"customer_id": customer, "feature": "calls",
                                                        "quantity": "3", "request_id": "agent-req-1"}))
    assert first["allowed"] is True and retry["outcome"] == "replayed", (first, retry)
    report["remaining_after"] = retry["remaining"]
    floated = await session.call_tool("consume", {"customer_id": customer, "feature": "calls",
                                                  "quantity": 1.5, "request_id": "agent-req-float"})
    assert floated.isError and payload(floated)["error"]["code"] == "parameter_invalid", floated

    recorded = payload(await session.call_tool("record_usage", {"customer_id": customer, "meter": meter,
                                                               "quantity": 7, "request_id": "agent-use-1"}))
    replayed = payload(await session.call_tool("record_usage", {"customer_id": customer, "meter": meter,
                                                               "quantity": 7, "request_id": "agent-use-1"}))
    assert recorded["outcome"] == "created" and replayed["outcome"] == "replayed", (recorded, replayed)
    now = datetime.now(timezone.utc)
    # A time without its offset (or a word) is refused, naming the field, and records nothing
    # (usage_value below counts the 7 above only).
    for tool, args, field in [
            ("record_usage", {"customer_id": customer, "meter": meter, "quantity": 5, "request_id": "agent-use-naive",
                              "occurred_at": now.replace(tzinfo=None).isoformat()}, "occurred_at"),
            ("usage_summary", {"customer_id": customer, "meter": meter, "from": "now",
                               "to": (now + timedelta(hours=1)).isoformat()}, "from")]:
        refused = await session.call_tool(tool, args)
        error = payload(refused)["error"] if refused.isError else {}
        assert (error.get("code"), error.get("param")) == ("parameter_invalid", field), (tool, refused)
    usage = payload(await session.call_tool("usage_summary", {
        "customer_id": customer, "meter": meter,
        "from": (now - timedelta(hours=1)).isoformat(), "to": (now + timedelta(hours=1)).isoformat()}))
    report["usage_value"] = usage["value"]

    bad = await session.call_tool("get_payment", {"payment_id": "pay_missing"})
    assert bad.isError and payload(bad)["error"]["code"] == "resource_missing", bad

    resources = await session.list_resources()
    assert [str(r.uri) for r in resources.resources] == ["payments://sql-api"], resources
    reference = await session.read_resource(AnyUrl("payments://sql-api"))
    text = reference.contents[0].text
    assert "payments.create_payment(" in text and "payments.consume(" in text and "view payments.payment_details" in text
    report["reference_chars"] = len(text)


async def reader(session):
    got = payload(await session.call_tool("get_payment", {"payment_id": payment}))
    assert got["id"] == payment, got
    refused = await session.call_tool("consume", {"customer_id": customer, "feature": "calls",
                                                  "quantity": "1", "request_id": "agent-req-2"})
    assert refused.isError, refused
    report["read_only_consume"] = payload(refused)["error"]["code"]
    refused = await session.call_tool("record_usage", {"customer_id": customer, "meter": meter,
                                                       "quantity": "1", "request_id": "agent-use-2"})
    report["read_only_record_usage"] = payload(refused)["error"]["code"] if refused.isError else "allowed"
    refused = await session.call_tool("reserve", {"customer_id": customer, "amount": 1, "unit": "tokens",
                                                  "request_id": "agent-hold-2"})
    report["read_only_reserve"] = payload(refused)["error"]["code"] if refused.isError else "allowed"
    refused = await session.call_tool("apply_coupon", {"subscription_id": subscription, "code": coupon})
    report["read_only_apply_coupon"] = payload(refused)["error"]["code"] if refused.isError else "allowed"
    report["read_only_preview"] = payload(await session.call_tool("preview_invoice",
                                                                  {"subscription_id": subscription}))["coupon"]


async def stranger(session):
    """A key bound to another customer: the customer's objects are missing, its name refused."""
    def code(result):
        return payload(result)["error"]["code"] if result.isError else "allowed"
    report["stranger"] = {
        "customer_status": code(await session.call_tool("customer_status", {"customer_id": customer})),
        "balance": code(await session.call_tool("balance", {"customer_id": customer})),
        "get_payment": code(await session.call_tool("get_payment", {"payment_id": payment})),
        "list_payments_of_customer": code(await session.call_tool("list_payments", {"customer_id": customer})),
        "list_payments": [p["customer_id"] for p in
                          payload(await session.call_tool("list_payments", {"limit": 100}))["data"]],
        "consume": code(await session.call_tool("consume", {"customer_id": customer, "feature": "calls",
                                                            "quantity": "1", "request_id": "stranger-1"})),
        "record_usage": code(await session.call_tool("record_usage", {"customer_id": customer, "meter": meter,
                                                                      "quantity": "1", "request_id": "stranger-2"})),
        "reserve": code(await session.call_tool("reserve", {"customer_id": customer, "amount": 1, "unit": "tokens",
                                                            "request_id": "stranger-3"})),
        "release": code(await session.call_tool("release", {"hold_id": report["hold"]})),
        "apply_coupon": code(await session.call_tool("apply_coupon", {"subscription_id": subscription, "code": coupon})),
        "preview_invoice": code(await session.call_tool("preview_invoice", {"subscription_id": subscription})),
    }


async def no_key():
    try:
        await http_session("sk_pay_not_a_key", lambda s: s.list_tools())
        return "connected"
    except BaseException as e:  # the SDK raises an ExceptionGroup from its task group
        return "refused" if "401" in repr(e) else repr(e)


async def stdio():
    params = StdioServerParameters(command=gateway_bin, args=["mcp"],
                                   env={"DATABASE_URL": database_url, "PAYMENTS_API_KEY": read_key, "RUST_LOG": "warn"})
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            tools = await session.list_tools()
            assert {t.name for t in tools.tools} == TOOLS
            status = payload(await session.call_tool("customer_status", {"customer_id": customer}))
            refused = await session.call_tool("consume", {"customer_id": customer, "feature": "calls",
                                                          "quantity": "1", "request_id": "agent-req-3"})
            return {"has_paid": status["has_paid"], "consume": payload(refused)["error"]["code"] if refused.isError else "allowed"}


async def main():
    await http_session(write_key, writer)
    await http_session(read_key, reader)
    await http_session(stranger_key, stranger)
    report["no_key"] = await no_key()
    report["stdio"] = await stdio()
    print(json.dumps(report))


asyncio.run(main())

"""The dashboard in Debian's Chromium, driven by Playwright (tests/tests/dashboard.rs runs it).

Arguments: gateway URL, a payment id (succeeded, 25.00 USD), its customer, an
operator's email and password, a viewer's email and password, the folder for
screenshots, and two authorized payments of the customer (20.00 USD each): one
to capture in part, one to cancel; a billed customer (an open invoice, a subscription) and a
coupon for it. Prints a JSON report as its last line; any failed check exits non-zero.
"""
import json
import os
import re
import sys
import time

from playwright.sync_api import Error as PlaywrightError, expect, sync_playwright

(base, payment, customer, op_email, op_password, viewer_email, viewer_password, shots, to_capture, to_cancel,
 billed, coupon) = sys.argv[1:13]
os.makedirs(shots, exist_ok=True)
report = {}

# As root, without a network: no sandbox, and nothing that phones home.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def shot(page, name):
    """A full-page screenshot for review. Headless Chromium on a loaded machine sometimes answers
    "Unable to capture screenshot" once; the page is the same a moment later."""
    path = os.path.join(shots, f"{name}.png")
    try:
        page.screenshot(path=path, full_page=True)
    except PlaywrightError:
        time.sleep(0.5)
        page.screenshot(path=path, full_page=True)


def sign_in(page, email, password):
    """With the keyboard only: the email field has the focus, Tab to the password, Enter sends."""
    expect(page.get_by_label("Email")).to_be_focused()
    page.keyboard.type(email)
    page.keyboard.press("Tab")
    expect(page.get_by_label("Password")).to_be_focused()
    page.keyboard.type(password)
    page.keyboard.press("Enter")


def every_field_is_labelled(page):
    """Each visible input and select has a label a screen reader announces."""
    unlabelled = page.evaluate("""() => [...document.querySelectorAll('input:not([type=hidden]), select')]
        .filter(e => e.labels.length === 0 && !e.getAttribute('aria-label')).map(e => e.name)""")
    assert not unlabelled, (page.url, unlabelled)


def csrf(page):
    return page.locator("form.sign-out input[name=csrf]").get_attribute("value")


def tables(page):
    """Each table's rows as their cells read, under its caption."""
    return {table.locator("caption").inner_text(): [row.locator("td").all_inner_texts()
                                                    for row in table.locator("tbody tr").all()]
            for table in page.locator("main table").all()}


with sync_playwright() as p:
    browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15000)

    # Not signed in: the sign-in page, which brings you back afterwards.
    page.goto(f"{base}/dashboard/payments/{payment}")
    assert "/dashboard/sign-in" in page.url, page.url
    every_field_is_labelled(page)
    shot(page, "sign-in")
    sign_in(page, op_email, "not the password at all")
    expect(page.get_by_role("alert")).to_contain_text("Email or password is wrong")
    page.get_by_label("Email").focus()
    page.get_by_label("Email").fill("")
    sign_in(page, op_email, op_password)
    expect(page).to_have_url(re.compile(f"/dashboard/payments/{payment}$"))

    # The payment made through the API, its balance and its verified history.
    expect(page.get_by_role("heading", level=1)).to_contain_text(payment)
    expect(page.locator("dd.balance-captured")).to_have_text("25.00 USD")
    expect(page.locator("dd.balance-refunded")).to_have_text("0.00 USD")
    expect(page.get_by_text("Chain verified")).to_be_visible()
    events_before = page.locator("section[aria-labelledby=timeline-title] tbody tr").count()
    assert events_before >= 2, events_before

    # The skip link comes first for keyboard users.
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()

    # A form from elsewhere (a wrong token) is refused.
    forged = page.request.post(f"{base}/dashboard/payments/{payment}/refund",
                               form={"csrf": "csrf_forged", "idempotency_key": "k1", "amount": "1.00"}, max_redirects=0)
    report["forged_form_status"] = forged.status

    # Refund 10.00 with a double-click, then send the same form again: one refund.
    page.get_by_label(re.compile("Refund amount")).fill("10.00")
    form = page.locator("form[action$='/refund']")
    fields = {name: form.locator(f"input[name={name}]").get_attribute("value") for name in ("csrf", "idempotency_key")}
    # (A double-click sends the form twice: the first page load is aborted by the second, so the
    # test waits for where the browser ends up, not for one navigation.)
    form.get_by_role("button", name="Refund").dblclick()
    expect(page).to_have_url(re.compile(r"done=refund"))
    expect(page.get_by_role("status")).to_contain_text("Refund requested")
    again = page.request.post(f"{base}/dashboard/payments/{payment}/refund",
                              form={**fields, "amount": "10.00", "reason": ""}, max_redirects=0)
    assert again.status == 303 and "done=refund" in again.headers["location"], (again.status, again.headers)

    # The provider settles the refund by webhook: the balance changes, the history grows.
    deadline = time.time() + 20
    while True:
        page.goto(f"{base}/dashboard/payments/{payment}")
        refunded = page.locator("dd.balance-refunded").inner_text()
        if refunded == "10.00 USD" or time.time() > deadline:
            break
        time.sleep(0.5)
    report["refunded_shown"] = refunded
    report["net_shown"] = page.locator("dd.balance-net").inner_text()
    refund_rows = page.locator("table:has(caption:text('Refunds of this payment')) tbody tr")
    expect(refund_rows).to_have_count(1)
    expect(refund_rows.first).to_contain_text("10.00 USD")
    expect(page.get_by_text("Chain verified")).to_be_visible()
    assert page.locator("section[aria-labelledby=timeline-title] tbody tr").count() > events_before
    shot(page, "payment")
    # What the page says of the payment, label by label (the test compares it with SQL).
    facts = page.locator("dl.facts")
    report["payment_facts"] = dict(zip(facts.locator("dt").all_inner_texts(), facts.locator("dd").all_inner_texts()))

    # Every other page, with a screenshot for review.
    for name, path, heading in [
        ("overview", "/dashboard", "Overview"),
        ("payments", f"/dashboard/payments?customer={customer}", "Payments"),
        ("refunds", "/dashboard/refunds", "Refunds and disputes"),
        ("subscriptions", "/dashboard/subscriptions", "Subscriptions"),
        ("customers", "/dashboard/customers", "Customers"),
        ("customer", f"/dashboard/customers/{customer}", "Customer"),
        ("webhooks", "/dashboard/webhooks", "Webhooks"),
        ("anomalies", "/dashboard/anomalies", "Anomalies"),
    ]:
        page.goto(base + path)
        expect(page.get_by_role("heading", level=1)).to_contain_text(heading)
        every_field_is_labelled(page)
        shot(page, name)
        # Each table's rows as their cells read (the test compares them with SQL).
        report[f"{name}_rows"] = [row.locator("td").all_inner_texts()
                                  for row in page.locator("main table tbody tr").all()]
        # And table by table, under their captions.
        report[f"{name}_tables"] = {
            table.locator("caption").inner_text(): [row.locator("td").all_inner_texts()
                                                    for row in table.locator("tbody tr").all()]
            for table in page.locator("main table").all()}
    # A customer with a subscription, a coupon and a tax: its billing tables (compared with SQL).
    page.goto(f"{base}/dashboard/customers/{billed}")
    report["billed_tables"] = tables(page)

    # The operator's billing actions there: a credit note (a double-click makes one), a coupon,
    # then voiding the invoice; a credit note on the void invoice is refused in the extension's words.
    every_field_is_labelled(page)
    invoice_id = page.get_by_label("Invoice to credit").input_value()
    page.get_by_label("Credit amount").fill("1.00")
    page.get_by_label("Credit reason").select_option("order_change")
    note_form = page.locator("form[action$='/credit_note']")
    note_fields = {name: note_form.locator(f"input[name={name}]").get_attribute("value")
                   for name in ("csrf", "idempotency_key")}
    note_form.get_by_role("button", name="Issue credit note").dblclick()
    expect(page).to_have_url(re.compile(r"done=credit_note"))
    expect(page.get_by_role("status")).to_contain_text("Credit note issued")
    again = page.request.post(f"{base}/dashboard/customers/{billed}/credit_note", max_redirects=0,
                              form={**note_fields, "invoice_id": invoice_id, "amount": "1.00", "reason": "order_change"})
    assert again.status == 303 and "done=credit_note" in again.headers["location"], (again.status, again.headers)
    report["billed_after_credit"] = tables(page)
    page.get_by_label("Coupon or promotion code").fill(coupon)
    page.get_by_role("button", name="Apply coupon").click()
    expect(page).to_have_url(re.compile(r"done=coupon"))
    expect(page.get_by_role("status")).to_contain_text("Coupon applied")
    page.get_by_label(re.compile("Invoice to void")).select_option(invoice_id)
    page.get_by_role("button", name="Void invoice").click()
    expect(page).to_have_url(re.compile(r"done=void"))
    expect(page.get_by_role("status")).to_contain_text("Invoice voided")
    report["billed_after_actions"] = tables(page)
    shot(page, "customer-billing")
    refused = page.request.post(f"{base}/dashboard/customers/{billed}/credit_note", max_redirects=0,
                                form={**note_fields, "idempotency_key": "dash_other", "invoice_id": invoice_id,
                                      "amount": "1.00", "reason": "duplicate"})
    assert refused.status == 303 and "error=PM206" in refused.headers["location"], (refused.status, refused.headers)
    page.goto(base + refused.headers["location"])
    expect(page.get_by_role("alert")).to_be_visible()
    # An invoice acted on from another customer's page: not found there.
    elsewhere = page.request.post(f"{base}/dashboard/customers/{customer}/void", max_redirects=0,
                                  form={"csrf": csrf(page), "invoice_id": invoice_id})
    report["other_customer_void_status"] = elsewhere.status
    page.goto(f"{base}/dashboard/payments?customer={customer}")
    expect(page.get_by_role("link", name=payment)).to_be_visible()
    # A payment that does not exist, and a date that is not one: error pages with the API's statuses.
    assert page.goto(f"{base}/dashboard/payments/pay_missing").status == 404
    expect(page.get_by_role("heading", level=1)).to_have_text("Not Found")
    assert page.goto(f"{base}/dashboard/payments?from=2026-13-45").status == 400
    expect(page.get_by_role("heading", level=1)).to_have_text("Bad Request")
    page.goto(f"{base}/dashboard/customers")
    page.get_by_label("Customer id").fill(customer)
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(f"/dashboard/customers/{customer}$"))
    expect(page.locator("table:has(caption:text('Captured, refunded')) tbody")).to_contain_text("15.00 USD")
    page.goto(f"{base}/dashboard")
    expect(page.locator("figure.chart svg").first).to_be_visible()

    # Capture part of an authorization; cancel another.
    page.goto(f"{base}/dashboard/payments/{to_capture}")
    every_field_is_labelled(page)
    page.get_by_label(re.compile("Capture amount")).fill("15.00")
    page.get_by_role("button", name="Capture").click()
    expect(page).to_have_url(re.compile(r"done=capture"))
    expect(page.locator("h1 .status")).to_have_text("succeeded")
    expect(page.locator("dd.balance-captured")).to_have_text("15.00 USD")
    page.goto(f"{base}/dashboard/payments/{to_cancel}")
    page.get_by_label("Reason").select_option("abandoned")
    page.get_by_role("button", name="Cancel payment").click()
    expect(page).to_have_url(re.compile(r"done=cancel"))
    expect(page.locator("h1 .status")).to_have_text("canceled")
    # Cancelling it again is refused in the extension's words, on the page.
    again = page.request.post(f"{base}/dashboard/payments/{to_cancel}/cancel", form={"csrf": csrf(page)},
                              max_redirects=0)
    assert again.status == 303 and "error=PM" in again.headers["location"], (again.status, again.headers)
    page.goto(base + again.headers["location"])
    expect(page.get_by_role("alert")).to_be_visible()

    # Sign out: the session is over, its pages send you to sign in.
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile("/dashboard/sign-in"))
    page.goto(f"{base}/dashboard")
    assert "/dashboard/sign-in" in page.url, page.url

    # A viewer reads the payment but has no refund form, and a hand-made refund is refused.
    page.goto(f"{base}/dashboard/sign-in?next=/dashboard/payments/{payment}")
    sign_in(page, viewer_email, viewer_password)
    expect(page).to_have_url(re.compile(f"/dashboard/payments/{payment}$"))
    expect(page.get_by_role("button", name="Refund")).to_have_count(0)
    refused = page.request.post(f"{base}/dashboard/payments/{payment}/refund",
                                form={"csrf": csrf(page), "idempotency_key": "viewer-try", "amount": "1.00"},
                                max_redirects=0)
    report["viewer_refund_status"] = refused.status
    # Nor any billing action on a customer's page.
    page.goto(f"{base}/dashboard/customers/{billed}")
    expect(page.get_by_role("button", name="Issue credit note")).to_have_count(0)
    expect(page.get_by_role("button", name="Apply coupon")).to_have_count(0)
    refused = page.request.post(f"{base}/dashboard/customers/{billed}/coupon", max_redirects=0,
                                form={"csrf": csrf(page), "subscription_id": "sub_x", "code": coupon})
    report["viewer_coupon_status"] = refused.status
    browser.close()

print(json.dumps(report))

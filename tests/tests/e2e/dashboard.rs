//! The dashboard in a real browser: Debian's Chromium driven by Playwright
//! for Python (`browser/dashboard.py`) against a gateway with the embedded
//! sandbox. Screenshots of every page land in `PAYMENTS_SCREENSHOTS`
//! (`make test`: .run/screenshots).

use payments_e2e::{api_key, connect, python_report, unique};
use serde_json::{json, Value};

/// A dashboard user with a chosen password, made as an administrator would.
async fn dashboard_user(role: &str) -> (String, String) {
    let email = format!("{}@example.com", unique(role));
    let password = format!("{}-correct-horse", unique("pw"));
    connect()
        .await
        .execute("SELECT payments.create_dashboard_user($1, $2, $3)", &[&email, &role, &password])
        .await
        .unwrap();
    (email, password)
}

#[tokio::test]
async fn unknown_pages_are_html_and_unknown_api_routes_stay_json() {
    let gateway = payments_e2e::sandbox_gateway(&[]).await;
    let http = reqwest::Client::new();
    let page = http.get(format!("{}/dashboard/nowhere", gateway.url)).send().await.unwrap();
    assert_eq!(page.status(), 404);
    assert!(page.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(page.headers()["content-security-policy"].to_str().unwrap().contains("default-src 'none'"));
    let api = http.get(format!("{}/v1/nowhere", gateway.url)).send().await.unwrap();
    assert_eq!(api.status(), 404);
    let body: Value = api.json().await.unwrap();
    assert_eq!(body["error"]["code"], "route_missing");
    // Signed out, a page sends you to sign in and back.
    let redirect = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let r = redirect.get(format!("{}/dashboard/refunds", gateway.url)).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/dashboard/sign-in?next=%2Fdashboard%2Frefunds");
}

/// Signs in to the dashboard at `url` from local address `from`: the answer's status.
async fn sign_in(url: &str, from: [u8; 4], email: &str, password: &str) -> u16 {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .local_address(std::net::IpAddr::from(from))
        .build()
        .unwrap();
    let page = http.get(format!("{url}/dashboard/sign-in")).send().await.unwrap();
    let cookie = page.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_string();
    let html = page.text().await.unwrap();
    let token = html.split(r#"name="csrf" value=""#).nth(1).unwrap().split('"').next().unwrap().to_string();
    let form = [("csrf", token.as_str()), ("email", email), ("password", password)];
    let r = http.post(format!("{url}/dashboard/sign-in")).header("cookie", cookie).form(&form).send().await;
    r.unwrap().status().as_u16()
}

#[tokio::test]
async fn five_wrong_passwords_lock_that_address_and_email_not_the_operator() {
    let gateway = payments_e2e::sandbox_gateway(&[]).await;
    let (email, password) = dashboard_user("viewer").await;
    let attacker = [127, 0, 0, 2];
    for _ in 0..5 {
        assert_eq!(sign_in(&gateway.url, attacker, &email, "not the password").await, 401);
    }
    assert_eq!(
        sign_in(&gateway.url, attacker, &email, &password).await,
        429,
        "from there, even the right password waits"
    );
    assert_eq!(sign_in(&gateway.url, [127, 0, 0, 1], &email, &password).await, 303, "the operator is not locked out");
}

#[tokio::test]
async fn a_flood_of_sign_ins_from_elsewhere_never_keeps_the_operator_out() {
    let gateway = payments_e2e::sandbox_gateway(&[]).await;
    let (email, password) = dashboard_user("operator").await;
    // 24 clients guess without pause from one address, at the operator's email and at others.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood: Vec<_> = (0..24)
        .map(|i| {
            let (url, email, stop) = (gateway.url.clone(), email.clone(), stop.clone());
            tokio::spawn(async move {
                let target = if i % 2 == 0 { email } else { format!("{}@example.com", unique("nobody")) };
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    sign_in(&url, [127, 0, 0, 3], &target, "guess").await;
                }
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let mut answers = Vec::new();
    for _ in 0..10 {
        answers.push(sign_in(&gateway.url, [127, 0, 0, 1], &email, &password).await);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for task in flood {
        task.await.unwrap();
    }
    assert_eq!(answers, vec![303; 10], "every one of the operator's sign-ins went through");
}

#[tokio::test]
async fn sign_in_see_a_payment_refund_it_once_and_a_viewer_cannot() {
    let gateway = payments_e2e::sandbox_gateway(&[]).await;
    let (_, key) = api_key(&["payments:read", "payments:write"]).await;
    let customer = unique("cus_dash");
    let pay = |capture_method: &'static str| {
        let (url, key, customer) = (gateway.url.clone(), key.clone(), customer.clone());
        async move {
            let body = json!({"customer_id": customer, "amount": if capture_method == "automatic" { "25.00" } else { "20.00" },
                "currency": "usd", "payment_method": "pm_card_visa", "capture_method": capture_method});
            let p: Value = reqwest::Client::new()
                .post(format!("{url}/v1/payments"))
                .bearer_auth(&key)
                .header("Idempotency-Key", unique("dash"))
                .json(&body)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let expected = if capture_method == "automatic" { "succeeded" } else { "requires_capture" };
            assert_eq!(p["status"], expected, "{p}");
            p["id"].as_str().unwrap().to_string()
        }
    };
    let id = &pay("automatic").await;
    let (to_capture, to_cancel) = (pay("manual").await, pay("manual").await);
    let db = connect().await;
    // Another customer, billed: a subscription with a coupon and a tax, its first invoice made
    // (run_billing an hour after the period's end, past its draft window, and before any hold
    // that must stay open).
    let billed = unique("cus_billed");
    let (plan, rate, coupon) = (unique("dash_plan").to_lowercase(), unique("dash-tax").to_lowercase(), unique("DASH"));
    let second_coupon = unique("ONEOFF");
    for (sql, param) in [
        ("SELECT payments.create_plan($1, 'usd', 10, 'month', trial_days => 1)", &plan),
        ("SELECT payments.create_tax_rate($1, 'Sales tax', 8.25, false)", &rate),
        ("SELECT payments.create_coupon($1, percent_off => 20, duration => 'forever')", &coupon),
        ("SELECT payments.create_coupon($1, amount_off => 1, currency => 'usd')", &second_coupon),
    ] {
        db.execute(sql, &[param]).await.unwrap();
    }
    db.execute("SELECT payments.set_customer_tax($1, ARRAY[$2])", &[&billed, &rate]).await.unwrap();
    let sub: String = db
        .query_one("SELECT id FROM payments.create_subscription($1, $2, $3)", &[&unique("k"), &billed, &plan])
        .await
        .unwrap()
        .get(0);
    db.execute("SELECT payments.apply_coupon($1, $2)", &[&sub, &coupon]).await.unwrap();
    db.execute(
        "SELECT payments.run_billing((SELECT current_period_end + interval '1 hour' FROM payments.subscriptions WHERE id = $1))",
        &[&sub],
    )
    .await
    .unwrap();
    // Usage on a meter, recorded now by both customers. The first has no subscription: its page
    // shows this calendar month's. The billed one's current period was started by the billing run
    // above, after now: its page shows that period's, none yet.
    let meter = unique("dash_meter").to_lowercase();
    db.execute("SELECT payments.create_meter($1, 'sum')", &[&meter]).await.unwrap();
    for (who, quantity) in [(&customer, "3"), (&billed, "2")] {
        db.execute(
            "SELECT payments.record_usage($1, $2, $3, $4::text::numeric)",
            &[&unique("u"), who, &meter, &quantity],
        )
        .await
        .unwrap();
    }
    // A wallet: credits granted, one hold open on them.
    db.execute(
        "SELECT payments.grant_credits($1, $2, 5, 'usd', now() + interval '30 days')",
        &[&unique("g"), &customer],
    )
    .await
    .unwrap();
    let hold: String = db
        .query_one("SELECT hold_id FROM payments.reserve($1, 1.25, 'usd', 'dash-job')", &[&customer])
        .await
        .unwrap()
        .get(0);
    let (operator, operator_password) = dashboard_user("operator").await;
    let (viewer, viewer_password) = dashboard_user("viewer").await;

    let shots = std::env::var("PAYMENTS_SCREENSHOTS")
        .unwrap_or_else(|_| std::env::temp_dir().join(unique("screenshots")).display().to_string());
    let args = [&gateway.url, id, &customer, &operator, &operator_password, &viewer, &viewer_password, &shots];
    let args: Vec<&str> = args
        .iter()
        .map(|a| a.as_str())
        .chain([to_capture.as_str(), to_cancel.as_str(), billed.as_str(), second_coupon.as_str()])
        .collect();
    let report = python_report("browser/dashboard.py", &args, 240).await;
    assert_eq!(report["refunded_shown"], "10.00 USD");
    assert_eq!(report["net_shown"], "15.00 USD");
    assert_eq!(report["viewer_refund_status"], 403);
    assert_eq!(report["viewer_coupon_status"], 403, "a viewer applies no coupon");
    assert_eq!(report["other_customer_void_status"], 404, "an invoice is voided from its own customer's page");
    assert_eq!(report["forged_form_status"], 403);

    // The double-click and the resent form made one refund, of 10.00.
    let refunds: Vec<(i64, String, String)> = db
        .query(
            "SELECT r.amount_minor, r.status, r.idempotency_key ~ ('^dashboard:' || u.id || ':dash_')
                    AND u.email = $2 AS by_operator
             FROM payments.refunds r, payments.dashboard_users u
             WHERE r.payment_id = $1 AND r.idempotency_key LIKE 'dashboard:' || u.id || ':%'",
            &[&id, &operator],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), if r.get::<_, bool>(2) { "operator" } else { "someone else" }.to_string()))
        .collect();
    assert_eq!(refunds, [(1000, "succeeded".to_string(), "operator".to_string())], "one refund, and who asked");
    let state = |id: String| {
        let db = &db;
        async move {
            let r = db
                .query_one("SELECT status, amount_captured_minor FROM payments.payment_details WHERE id = $1", &[&id])
                .await
                .unwrap();
            (r.get::<_, String>(0), r.get::<_, Option<i64>>(1))
        }
    };
    assert_eq!(state(to_capture).await, ("succeeded".to_string(), Some(1500)), "captured 15.00 of 20.00");
    assert_eq!(state(to_cancel).await.0, "canceled");

    // What the pages show is what the database holds.
    let row = db
        .query_one(
            "SELECT customer_id, amount || ' ' || currency,
                    to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') || ' UTC'
             FROM payments.payment_details WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    let facts = &report["payment_facts"];
    let shown =
        |label: &str| facts[label].as_str().unwrap_or_else(|| panic!("no {label} on the page: {facts}")).to_string();
    assert_eq!(
        (shown("Customer"), shown("Amount"), shown("Created")),
        (row.get(0), row.get(1), row.get(2)),
        "the payment page"
    );
    let rows =
        |page: &str| -> Vec<Vec<String>> { serde_json::from_value(report[format!("{page}_rows")].clone()).unwrap() };
    let listed = rows("payments");
    let payments = db
        .query(
            "SELECT id, amount || ' ' || currency, status, to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI')
             FROM payments.payment_details WHERE customer_id = $1 ORDER BY id DESC",
            &[&customer],
        )
        .await
        .unwrap();
    assert_eq!(listed.len(), payments.len(), "the customer's payments, one row each: {listed:?}");
    // (The two authorized ones are captured and canceled after the page was read: their status moved on.)
    for (cells, p) in listed.iter().zip(&payments) {
        let status: String = p.get(2);
        let status = if p.get::<_, String>(0) == *id { status } else { "requires_capture".to_string() };
        for value in [p.get::<_, String>(0), p.get(1), status, p.get(3)] {
            assert!(cells.iter().any(|c| c.contains(&value)), "{value} missing from the payments row {cells:?}");
        }
    }
    let refund_row = rows("refunds").into_iter().find(|cells| cells.iter().any(|c| c.contains(id.as_str())));
    let refund_row = refund_row.unwrap_or_else(|| panic!("the refund of {id} is not on the refunds page"));
    for value in ["10.00 USD", "succeeded"] {
        assert!(refund_row.iter().any(|c| c.contains(value)), "{value} missing from the refunds row {refund_row:?}");
    }
    // The customer's wallet as the ledger holds it, and the books balanced on the overview.
    let tables = |page: &str, caption: &str| -> Vec<Vec<String>> {
        serde_json::from_value(report[format!("{page}_tables")][caption].clone())
            .unwrap_or_else(|_| panic!("no table {caption:?} on the {page} page"))
    };
    // Rows of one text array each, for the customer.
    let text_rows = |sql: &'static str| {
        let (db, customer) = (&db, &customer);
        async move {
            let rows = db.query(sql, &[customer]).await.unwrap();
            rows.iter().map(|r| r.get::<_, Vec<String>>(0)).collect::<Vec<_>>()
        }
    };
    let wallet =
        text_rows("SELECT ARRAY[account, unit, posted::text, held::text, available::text] FROM payments.balances($1)")
            .await;
    assert_eq!(wallet, [["credits", "USD", "5.00", "1.25", "3.75"]]);
    assert_eq!(tables("customer", "Credits and balance now, by account and unit"), wallet);
    let grants = tables("customer", "Credit grants, in the order they are used");
    assert_eq!(grants.len(), 1);
    assert_eq!(grants[0][1..5], ["USD", "5.00", "3.75", "invoices"], "{grants:?}");
    let holds = tables("customer", "The latest 20 holds");
    let expires: String = db
        .query_one(
            "SELECT to_char(expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI') FROM payments.hold_details WHERE id = $1",
            &[&hold],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(holds, [[hold.as_str(), "USD", "1.25", "held", "—", expires.as_str()]], "nothing spent yet");
    let entries = tables("customer", "The latest 20 ledger entries");
    let ledger = text_rows(
        "SELECT ARRAY[kind, debit_account, credit_account, amount || ' ' || unit, reference] FROM payments.ledger
         WHERE customer_id = $1 ORDER BY transfer_id DESC",
    )
    .await;
    // (The capture and cancel below came after the page was read: the page shows the older ones.)
    let shown: Vec<Vec<String>> = entries.iter().map(|e| e[1..].to_vec()).collect();
    assert_eq!(shown, ledger[ledger.len() - shown.len()..], "newest first, as the ledger holds them");
    assert!(shown.contains(&vec!["hold".into(), "credits".into(), "holds".into(), "1.25 USD".into(), hold.clone()]));
    // The billed customer's invoice, coupon and tax, as SQL holds them: 10.00, 20 % off, 8.25 % of 8.00.
    let billed_table = |caption: &str| -> Vec<Vec<String>> {
        serde_json::from_value(report["billed_tables"][caption].clone())
            .unwrap_or_else(|_| panic!("no table {caption:?} on the billed customer's page"))
    };
    // Each page's usage of the meter, as usage_summary adds it up over the period the page names.
    let usage_of = |tables: &serde_json::Value| -> Vec<Vec<String>> {
        let rows: Vec<Vec<String>> = serde_json::from_value(tables["Usage by meter"].clone()).unwrap();
        rows.into_iter().filter(|r| r[0] == meter).collect()
    };
    assert_eq!(usage_of(&report["customer_tables"]), [[meter.as_str(), "sum", "3", "1"]]);
    assert_eq!(usage_of(&report["billed_tables"]), [[meter.as_str(), "sum", "0", "0"]]);
    let number: String =
        db.query_one("SELECT number FROM payments.invoices WHERE subscription_id = $1", &[&sub]).await.unwrap().get(0);
    let invoices = billed_table("The latest 20 invoices: what was charged, taken off and credited");
    assert_eq!(invoices.len(), 1, "{invoices:?}");
    let shown: Vec<&str> = invoices[0].iter().map(String::as_str).collect();
    assert_eq!(shown[0], number);
    assert_eq!(shown[2..], ["10.00 USD", "2.00 USD", coupon.as_str(), "0.66 USD", "0.00 USD", "8.66 USD"]);
    assert_eq!(
        billed_table("Coupons its subscriptions redeemed"),
        [[coupon.as_str(), sub.as_str(), "1 to forever", "active"]]
    );
    assert_eq!(
        billed_table("Tax rates its invoices charge"),
        [["Sales tax", rate.as_str(), "8.25 %", "exclusive", "charged"]]
    );
    // The operator's billing actions, as the page showed them and as SQL holds them: one credit
    // note of 1.00 (double-clicked and sent again), the coupon, then the invoice void.
    let invoices_in = |report_key: &str| -> Vec<Vec<String>> {
        serde_json::from_value(
            report[report_key]["The latest 20 invoices: what was charged, taken off and credited"].clone(),
        )
        .unwrap()
    };
    let credited = invoices_in("billed_after_credit");
    assert_eq!((credited[0][1].as_str(), credited[0][6].as_str()), ("open", "1.00 USD"), "{credited:?}");
    let voided = invoices_in("billed_after_actions");
    assert_eq!(voided[0][1], "void", "{voided:?}");
    let notes = db
        .query(
            "SELECT n.amount_minor, n.reason, i.status FROM payments.credit_notes n
             JOIN payments.invoices i ON i.customer_id = n.customer_id AND i.id = n.invoice_id
             JOIN payments.dashboard_users u ON n.idempotency_key LIKE 'dashboard:' || u.id || ':%'
             WHERE n.customer_id = $1 AND u.email = $2",
            &[&billed, &operator],
        )
        .await
        .unwrap();
    let notes: Vec<(i64, String, String)> = notes.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect();
    assert_eq!(notes, [(100, "order_change".to_string(), "void".to_string())], "one note, by the operator");
    let discounts: Vec<String> = db
        .query("SELECT coupon FROM payments.discounts WHERE subscription_id = $1 AND ended_at IS NULL", &[&sub])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(discounts, vec![second_coupon.clone()], "the coupon applied from the page replaced the first");
    let coupons_shown: Vec<Vec<String>> =
        serde_json::from_value(report["billed_after_actions"]["Coupons its subscriptions redeemed"].clone()).unwrap();
    assert_eq!(coupons_shown[0][0..2], [second_coupon.as_str(), sub.as_str()], "{coupons_shown:?}");

    let trial = tables("overview", "Trial balance");
    assert!(trial.iter().any(|r| r[0] == "USD"), "{trial:?}");
    for row in &trial {
        assert_eq!(
            (row[1].as_str(), row[3].parse::<f64>().ok()),
            (row[2].as_str(), Some(0.0)),
            "the books balance: {row:?}"
        );
    }

    for page in
        ["sign-in", "overview", "payments", "payment", "refunds", "subscriptions", "customer", "webhooks", "anomalies"]
    {
        // Kept for review (make test: .run/screenshots); what they show is checked above.
        let shot = std::path::Path::new(&shots).join(format!("{page}.png"));
        assert!(std::fs::metadata(&shot).map(|m| m.len() > 1000).unwrap_or(false), "no screenshot {}", shot.display());
    }
}

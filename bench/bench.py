#!/usr/bin/env python3
"""make bench: the SQL functions beside a bare INSERT, the gateway beside the
same work in SQL, and growth to 10M payments, in one run on one cluster.

Results are ratios first (this machine is shared and noisy; absolute numbers
drift). Writes bench/results/<stamp>.{md,json} and bench/results/latest.md.

usage: bench.py [--smoke] [--out DIR]
"""

import argparse
import datetime
import json
import os
import pathlib
import re
import signal
import subprocess
import tempfile
import time
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parent.parent
PG_BIN = "/usr/lib/postgresql/15/bin"
PORT = os.environ.get("PGPORT", "54315")
DB = "payments_bench"
SECRET = "whsec_bench"


def psql(sql, db=DB):
    out = subprocess.run(
        [f"{PG_BIN}/psql", "-X", "-q", "-tA", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(PORT),
         "-U", "postgres", "-d", db, "-c", sql],
        capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"bench: psql failed: {out.stderr.strip()}\n{sql}")
    return out.stdout.strip()


def pgbench(script, clients, seconds, log_latencies=False):
    """Runs one pgbench script; returns tps, mean latency and (with a log) p50/p99 in ms."""
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp, "script.sql")
        path.write_text(script)
        os.chmod(tmp, 0o755)
        cmd = [f"{PG_BIN}/pgbench", "-n", "-M", "prepared", "-h", "127.0.0.1", "-p", str(PORT), "-U", "postgres",
               "-c", str(clients), "-j", str(min(clients, 2)), "-T", str(seconds), "-f", str(path), DB]
        if log_latencies:
            cmd += ["-l", f"--log-prefix={tmp}/log"]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=tmp).stdout
        result = {
            "tps": float(re.search(r"tps = ([\d.]+) \(without initial", out).group(1)),
            "latency_ms": float(re.search(r"latency average = ([\d.]+) ms", out).group(1)),
            "failed": int((re.search(r"number of failed transactions: (\d+)", out) or [0, 0])[1]),
        }
        if log_latencies:
            lat = sorted(int(line.split()[2]) for f in pathlib.Path(tmp).glob("log.*") for line in f.open())
            result["p50_ms"] = lat[len(lat) // 2] / 1000
            result["p99_ms"] = lat[min(len(lat) - 1, int(len(lat) * 0.99))] / 1000
        return result


SETUP = f"""
CREATE EXTENSION IF NOT EXISTS pgcrypto;
CREATE SCHEMA IF NOT EXISTS bench;
CREATE TABLE IF NOT EXISTS bench.bare_payments (LIKE payments.payments INCLUDING ALL);
CREATE TABLE IF NOT EXISTS bench.events (n bigint PRIMARY KEY, headers jsonb NOT NULL, body bytea NOT NULL);
CREATE SEQUENCE IF NOT EXISTS bench.event_seq;
-- 100 identical rows: a function over table columns runs once per row (over constants it may run once).
CREATE TABLE IF NOT EXISTS bench.verify_sample AS
    SELECT g AS n, 'whsec_bench'::text AS secret, 1700000000::bigint AS t,
           convert_to(repeat('x', 600), 'UTF8') AS body, NULL::text AS sig, NULL::jsonb AS headers
    FROM generate_series(1, 100) g;
UPDATE bench.verify_sample SET
    sig = encode(hmac(convert_to(t || '.', 'UTF8') || body, convert_to(secret, 'UTF8'), 'sha256'), 'hex');
UPDATE bench.verify_sample SET headers = jsonb_build_object('Stripe-Signature', 't=' || t || ',v1=' || sig);
SELECT payments.add_webhook_secret('bench', 'stripe', '{SECRET}')
WHERE NOT EXISTS (SELECT FROM payments.webhook_secrets WHERE provider = 'bench');
SELECT count(*) FROM generate_series(1, 10000) g,
    LATERAL payments.create_payment('replay-' || g, 'cust_replay', 10.00, 'USD');
-- Billing: a meter, and 10,000 customers on a free plan whose feature has no limit (consume always counts).
SELECT code FROM payments.create_meter('bench_calls', 'sum');
SELECT code FROM payments.create_plan('bench', 'USD', 0, 'month', features => '{{"calls": null}}');
SELECT count(*) FROM generate_series(1, 10000) g,
    LATERAL payments.create_subscription('bench-sub-' || g, 'cust_' || g, 'bench');
"""

# How the gateway renders a payment (gateway/src/db.rs, payment_json!).
PAYMENT_JSON = "(to_jsonb({r}) - 'outcome' || jsonb_build_object('object', 'payment', 'amount', {r}.amount::text))::text"
PAYMENT_INTENT = json.dumps({
    "id": "pi_zddzkq3z9k82ja5n185f206tx4wpb5w6", "amount": 4999, "object": "payment_intent", "status": "succeeded",
    "created": 1795625289, "currency": "usd", "customer": None, "livemode": False,
    "metadata": {"payment_id": "pay_01m89sq1vzezwym27nazh3v2dd", "customer_id": "cust_1"}, "description": None,
    "next_action": None, "latest_charge": "ch_ty7r8h1scrybzmpkqnm3j1j9srzhd622", "capture_method": "automatic",
    "payment_method": "pm_card_visa", "amount_received": 4999, "amount_capturable": 0, "last_payment_error": None,
    "cancellation_reason": None, "confirmation_method": "automatic"})

SCRIPTS = {
    "a": ("bare INSERT into a payments-shaped table",
          "\\set c random(1, 10000)\n"
          "INSERT INTO bench.bare_payments (id, customer_id, amount_minor, currency, status, capture_method) "
          "VALUES ('pay_' || gen_random_uuid(), 'cust_' || :c, 4999, 'USD', 'requires_payment_method', 'automatic');\n"),
    "b": ("payments.create_payment, fresh keys",
          "\\set c random(1, 10000)\n"
          "SELECT id FROM payments.create_payment(gen_random_uuid()::text, 'cust_' || :c, 49.99, 'USD');\n"),
    "c": ("payments.create_payment, replays",
          "\\set i random(1, 10000)\n"
          "SELECT id FROM payments.create_payment('replay-' || :i, 'cust_replay', 10.00, 'USD');\n"),
    "d": ("payments.ingest_webhook, fresh signed events to succeeded",
          "SELECT payments.ingest_webhook('bench', e.headers, e.body) FROM bench.events e "
          "WHERE e.n = (SELECT nextval('bench.event_seq'));\n"),
    "e": ("payments.verify_webhook_signature ×100",
          "SELECT count(*) FROM bench.verify_sample s "
          "WHERE payments.verify_webhook_signature('stripe', s.secret, s.headers, s.body, '100 years', to_timestamp(s.t));\n"),
    "e_pgcrypto": ("the same HMAC with pgcrypto in SQL ×100",
          "SELECT count(*) FROM bench.verify_sample s "
          "WHERE encode(hmac(convert_to(s.t || '.', 'UTF8') || s.body, convert_to(s.secret, 'UTF8'), 'sha256'), 'hex') = s.sig;\n"),
    "g": ("payments.record_usage, fresh keys",
          "\\set c random(1, 10000)\n"
          "SELECT id FROM payments.record_usage(gen_random_uuid()::text, 'cust_' || :c, 'bench_calls', 1);\n"),
    "h": ("payments.consume, fresh request ids",
          "\\set c random(1, 10000)\n"
          "SELECT allowed FROM payments.consume('cust_' || :c, 'calls', 1, gen_random_uuid()::text);\n"),
    # The gateway's two statements (gateway/src/db.rs: CREATE_PAYMENT, RECORD_PROVIDER_RESULT), each
    # rendering the payment as JSON, with a PaymentIntent of the size the sandbox answers.
    "f": ("create_payment + record_provider_result, as the gateway issues them",
          "\\set c random(1, 10000)\n"
          f"SELECT {PAYMENT_JSON.format(r='r')} AS body, r.id AS pid FROM payments.create_payment(gen_random_uuid()::text, "
          "'cust_' || :c, coalesce('49.99'::text::numeric, payments.to_major(NULL, 'USD')), 'USD', 'pm_card_visa', NULL, "
          "NULL::text::jsonb, NULL) r \\gset\n"
          f"SELECT {PAYMENT_JSON.format(r='r')} FROM payments.record_provider_result(:pid, 'bench', 'pi_' || :pid, "
          f"'succeeded', '{PAYMENT_INTENT}'::text::jsonb) r;\n"),
}


def median_run(script, clients, seconds, runs=3):
    """The run with the median p99 of `runs`: one run's p99 of sub-millisecond
    reads moves with whatever else the machine is doing."""
    results = sorted((pgbench(script, clients, seconds, log_latencies=True) for _ in range(runs)),
                     key=lambda r: r["p99_ms"])
    return dict(results[len(results) // 2], p99_ms_runs=[r["p99_ms"] for r in results])


def prepare_events(count):
    """`count` linked payments and, for each, a freshly signed payment_intent.succeeded event."""
    first = int(psql("SELECT coalesce(max(n), 0) FROM bench.events")) + 1
    # Batches: each link locks its provider id's row to the end of its transaction.
    for start in range(first, first + count, 2000):
        end = min(start + 1999, first + count - 1)
        psql(f"""
            SELECT count(*)
            FROM generate_series({start}, {end}) g,
                 LATERAL payments.create_payment('ingest-' || g, 'cust_ingest', 10, 'USD', 'pm_card_visa') p,
                 LATERAL payments.record_provider_result(p.id, 'bench', 'pi_ingest_' || g, 'requires_confirmation',
                                                        '{{"amount": 1000, "currency": "usd"}}') r;
            INSERT INTO bench.events (n, headers, body)
            SELECT g, jsonb_build_object('Stripe-Signature',
                       't=' || t || ',v1=' || encode(hmac(convert_to(t || '.', 'UTF8') || b, '{SECRET}', 'sha256'), 'hex')), b
            FROM generate_series({start}, {end}) g,
                 LATERAL (SELECT floor(extract(epoch FROM now()))::bigint AS t) ts,
                 LATERAL (SELECT convert_to(jsonb_build_object('id', 'evt_bench_' || g, 'object', 'event',
                     'type', 'payment_intent.succeeded', 'created', t,
                     'data', jsonb_build_object('object', jsonb_build_object('id', 'pi_ingest_' || g,
                         'object', 'payment_intent', 'status', 'succeeded', 'amount', 1000, 'currency', 'usd',
                         'amount_received', 1000, 'amount_capturable', 0)))::text, 'UTF8') AS b) body;
        """)
    psql(f"SELECT setval('bench.event_seq', {first}, false)")


def preload(size):
    """Preloads payments (with creation events) until `size` of them exist, without the API.
    Preloaded customers have 60 payments each, so a list call returns a full
    page of 50 at every size and only the table's size changes between sizes."""
    have = int(psql("SELECT count(*) FROM payments.payments WHERE customer_id LIKE 'cust\\_p%'"))
    step = 1_000_000
    while have < size:
        n = min(step, size - have)
        psql(f"""
            WITH p AS (
                INSERT INTO payments.payments (id, customer_id, amount_minor, currency, status, capture_method)
                SELECT payments._new_id('pay'), 'cust_p' || (g / 60), 1000 + g % 5000, 'USD',
                       'requires_payment_method', 'automatic'
                FROM generate_series({have + 1}, {have + n}) g
                RETURNING id, customer_id, status, created_at),
            routes AS (
                INSERT INTO payments.payment_customers (payment_id, customer_id) SELECT p.id, p.customer_id FROM p)
            INSERT INTO payments.payment_events
                (customer_id, payment_id, seq, from_status, to_status, applied, source, reason, data, created_at,
                 prev_hash, hash)
            SELECT p.customer_id, p.id, 1, NULL, p.status, true, 'api', 'created', '{{}}', p.created_at, NULL,
                   payments._event_hash(NULL, p.id, 1, NULL, p.status, true, 'api', 'created', '{{}}',
                                        payments._epoch_micros(p.created_at))
            FROM p;
        """)
        have += n
    psql("VACUUM ANALYZE payments.payments")
    psql("VACUUM ANALYZE payments.payment_events")
    psql("VACUUM ANALYZE payments.payment_customers")
    # Write out the load's dirty pages now, so no checkpoint runs during the measurements.
    psql("CHECKPOINT")
    rows = int(psql("SELECT count(*) FROM payments.payments"))
    percent = min(100.0, 20_000 * 100.0 / size)
    psql("DROP TABLE IF EXISTS bench.sample_ids; CREATE TABLE bench.sample_ids AS "
         f"SELECT row_number() OVER () AS n, id, customer_id FROM payments.payments TABLESAMPLE BERNOULLI ({percent}) "
         "WHERE customer_id LIKE 'cust\\_p%' LIMIT 10000; CREATE UNIQUE INDEX ON bench.sample_ids (n);")
    return int(psql("SELECT count(*) FROM bench.sample_ids")), rows


def wrk(url, seconds, connections, lua=None, headers=()):
    cmd = ["wrk", "-t", "2", "-c", str(connections), "-d", f"{seconds}s", "--latency"]
    for h in headers:
        cmd += ["-H", h]
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(lua or "")
    if lua:
        cmd += ["-s", f.name]
    out = subprocess.run(cmd + [url], check=True, capture_output=True, text=True).stdout
    os.unlink(f.name)

    def ms(label):
        m = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        return float(m.group(1)) * {"us": 0.001, "ms": 1, "s": 1000}[m.group(2)]

    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)), "p50_ms": ms("50"),
            "p99_ms": ms("99"), "non_2xx": int(non2xx.group(1)) if non2xx else 0}


def spawn(binary, args, env):
    """Starts a gateway-binary subcommand on a free port; returns the process and its base URL."""
    proc = subprocess.Popen([str(binary), *args, "--listen", "127.0.0.1:0"], env=env, stdout=subprocess.PIPE, text=True)
    return proc, proc.stdout.readline().split()[2]


def gateway_bench(seconds, connections, binary):
    """wrk against the gateway; the sandbox runs as its own process, as Stripe
    would be remote, so the peak RSS measured is the gateway's alone."""
    key = psql("SELECT api_key FROM payments.create_api_key('bench', ARRAY['payments:read', 'payments:write'])")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SANDBOX_")}
    env["RUST_LOG"] = "warn"
    sandbox, sandbox_url = spawn(binary, ["sandbox"], dict(env, SANDBOX_API_KEY="sk_test_bench"))
    proc = None
    try:
        proc, url = spawn(binary, ["serve"], dict(
            env, DATABASE_URL=f"host=127.0.0.1 port={PORT} user=postgres dbname={DB}",
            GATEWAY_POOL_SIZE=str(connections), GATEWAY_POOL_WAIT_MS="2000", RECONCILE_INTERVAL_MS="3600000",
            STRIPE_SECRET_KEY="sk_test_bench", STRIPE_API_BASE=sandbox_url, PAYMENTS_PROVIDER_NAME="bench"))
        run = f"{time.time_ns():x}"
        lua = f"""
wrk.method = "POST"
wrk.body = '{{"customer_id": "cust_gw", "amount": "49.99", "currency": "USD", "payment_method": "pm_card_visa"}}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {key}"
local threads = 0
function setup(thread) threads = threads + 1; thread:set("tid", threads) end
function init(args) counter = 0 end
function request()
  counter = counter + 1
  wrk.headers["Idempotency-Key"] = "{run}-" .. tid .. "-" .. counter
  return wrk.format()
end
"""
        post = wrk(f"{url}/v1/payments", seconds, connections, lua=lua)
        payment = psql("SELECT id FROM payments.payments WHERE customer_id = 'cust_gw' LIMIT 1")
        get = wrk(f"{url}/v1/payments/{payment}", seconds, connections, headers=[f"Authorization: Bearer {key}"])
        rss_kib = int(re.search(r"VmHWM:\s+(\d+)", pathlib.Path(f"/proc/{proc.pid}/status").read_text()).group(1))
        return {"post": post, "get": get, "peak_rss_mib": round(rss_kib / 1024, 1)}
    finally:
        for p in (proc, sandbox):
            if p:
                p.send_signal(signal.SIGINT)
                p.wait(timeout=10)


def fresh_database():
    psql(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)", db="postgres")
    psql(f"CREATE DATABASE {DB}", db="postgres")
    psql("CREATE EXTENSION payments")
    psql(f"ALTER DATABASE {DB} SET payments.webhook_tolerance = '1 day'")


def scale_out(seconds, clients, citus_port):
    """The SQL workloads again on the 3-node loopback Citus cluster (scripts/citus.sh), after
    payments.distribute(), with the bare table distributed beside the payments."""
    global PORT
    single_port, PORT = PORT, citus_port
    try:
        subprocess.run([str(ROOT / "scripts/citus.sh"), "createdb", DB], check=True, capture_output=True,
                       env=dict(os.environ, CITUS_PORT=str(citus_port)))
        psql(SETUP)
        psql("SELECT create_distributed_table('bench.bare_payments', 'customer_id', colocate_with => 'payments.payments')")
        row = {name: pgbench(SCRIPTS[name][1], clients, seconds) for name in ["a", "b", "c", "f"]}
        prepare_events(int(row["b"]["tps"] * seconds * 1.5) + 100)
        row["d"] = pgbench(SCRIPTS["d"][1], clients, seconds)
        return {"clients": clients, "sql": row}
    finally:
        PORT = single_port


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--smoke", action="store_true", help="seconds, tiny sizes: proves the harness works")
    ap.add_argument("--out", default=str(ROOT / "bench/results"))
    ap.add_argument("--gateway-bin", default=str(ROOT / "target/release/payments-gateway"))
    ap.add_argument("--citus-port", type=int, help="also run the SQL workloads on the Citus cluster at this port")
    args = ap.parse_args()
    seconds = 1 if args.smoke else 10
    clients = [1, 4] if args.smoke else [1, 8, 32]
    sizes = [2_000, 5_000] if args.smoke else [100_000, 1_000_000, 10_000_000]
    mid = clients[-1] if args.smoke else 8

    fresh_database()
    psql(SETUP)

    results = {"sql": {}, "machine": {
        "cores": os.cpu_count(), "postgres": psql("SHOW server_version"),
        "settings": dict(line.split("|") for line in psql(
            "SELECT name, setting FROM pg_settings WHERE name IN ('fsync', 'synchronous_commit', 'shared_buffers', "
            "'max_wal_size', 'wal_level', 'checkpoint_timeout', 'work_mem') ORDER BY name").splitlines()),
        "smoke": args.smoke, "seconds_per_run": seconds,
    }}
    for c in clients:
        row = {}
        for name in ["a", "b", "c", "e", "e_pgcrypto", "f", "g", "h"]:
            row[name] = pgbench(SCRIPTS[name][1], c, seconds)
        prepare_events(int(row["b"]["tps"] * seconds * 1.5) + 100)
        row["d"] = pgbench(SCRIPTS["d"][1], c, seconds)
        applied = psql("SELECT count(*) FROM payments.webhook_events WHERE result = 'applied'")
        row["d"]["applied_total"] = int(applied)
        results["sql"][c] = row
        print(f"clients={c}: " + ", ".join(f"{k}={v['tps']:.0f} tps" for k, v in row.items()), flush=True)

    if args.citus_port:
        results["scale_out"] = scale_out(seconds, mid, args.citus_port)
        print(f"scale-out: {results['scale_out']}", flush=True)

    results["gateway"] = gateway_bench(seconds, mid, args.gateway_bin)
    results["gateway"]["connections"] = mid
    print(f"gateway: {results['gateway']}", flush=True)

    # Growth starts from an empty table: sizes are what they say, not plus what the runs above made.
    fresh_database()
    psql("CREATE SCHEMA bench")
    results["growth"] = {}
    for size in sizes:
        t0 = time.time()
        samples, rows = preload(size)
        load_s = time.time() - t0
        get = "\\set n random(1, %d)\nSELECT * FROM payments.get_payment((SELECT id FROM bench.sample_ids WHERE n = :n));\n" % samples
        lst = ("\\set n random(1, %d)\nSELECT * FROM payments.list_payments("
               "(SELECT customer_id FROM bench.sample_ids WHERE n = :n), NULL, 50);\n" % samples)
        results["growth"][size] = {
            "payments": rows,
            "preload_seconds": round(load_s, 1),
            "create_tps": pgbench(SCRIPTS["b"][1], mid, seconds)["tps"],
            "get": median_run(get, mid, seconds),
            "list": median_run(lst, mid, seconds),
        }
        print(f"growth {size}: {results['growth'][size]}", flush=True)

    write(results, pathlib.Path(args.out))


def ratio(x, y):
    return x / y if y else float("nan")


def scale_out_lines(r):
    if "scale_out" not in r:
        return []
    c, citus = r["scale_out"]["clients"], r["scale_out"]["sql"]
    single = r["sql"].get(c, list(r["sql"].values())[-1])
    lines = [f"## Scale-out (pgbench, {c} clients): a 3-node Citus cluster on this machine's loopback beside one node", "",
             "The three nodes share this machine's cores with each other and with pgbench: the ratios show what "
             "distribution costs per call, not what more machines add.", "",
             "| workload | one node tps | Citus tps | Citus / one node | per (a) on one node | per (a) on Citus |",
             "|---|---|---|---|---|---|"]
    for name in ["a", "b", "c", "d", "f"]:
        s, d = single[name]["tps"], citus[name]["tps"]
        lines.append(f"| ({name}) {SCRIPTS[name][0]} | {s:.0f} | {d:.0f} | {ratio(d, s):.2f} | "
                     f"{ratio(s, single['a']['tps']):.2f} | {ratio(d, citus['a']['tps']):.2f} |")
    return lines + [""]


def write(r, out):
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    lines = [f"# make bench — {stamp}", "",
             f"{r['machine']['cores']} cores, PostgreSQL {r['machine']['postgres']}, "
             f"settings {r['machine']['settings']}, {r['machine']['seconds_per_run']} s per run"
             + (" (SMOKE: numbers mean nothing)" if r["machine"]["smoke"] else ""), "",
             "## SQL level (pgbench, transactions per second)", "",
             "| clients | (a) bare INSERT | (b) create_payment | b/a | (c) replay | c/a | (d) ingest_webhook | d/a | (e) verify/s | pgcrypto HMAC/s | e/pgcrypto | (f) create+record |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for c, row in r["sql"].items():
        a = row["a"]["tps"]
        lines.append(
            f"| {c} | {a:.0f} | {row['b']['tps']:.0f} | {ratio(row['b']['tps'], a):.2f} | {row['c']['tps']:.0f} | "
            f"{ratio(row['c']['tps'], a):.2f} | {row['d']['tps']:.0f} | {ratio(row['d']['tps'], a):.2f} | "
            f"{row['e']['tps'] * 100:.0f} | {row['e_pgcrypto']['tps'] * 100:.0f} | "
            f"{ratio(row['e']['tps'], row['e_pgcrypto']['tps']):.2f} | {row['f']['tps']:.0f} |")
    lines += ["", "## Billing paths (pgbench, transactions per second)", "",
              "| clients | (a) bare INSERT | (g) record_usage | g/a | (h) consume | h/a |", "|---|---|---|---|---|---|"]
    for c, row in r["sql"].items():
        a = row["a"]["tps"]
        lines.append(f"| {c} | {a:.0f} | {row['g']['tps']:.0f} | {ratio(row['g']['tps'], a):.2f} | "
                     f"{row['h']['tps']:.0f} | {ratio(row['h']['tps'], a):.2f} |")
    g = r["gateway"]
    f_same = r["sql"].get(g["connections"], list(r["sql"].values())[-1])["f"]["tps"]
    lines += ["", f"## Gateway (wrk, {g['connections']} connections, sandbox in its own process, no added latency)", "",
              "| route | req/s | p50 ms | p99 ms | non-2xx | ratio |", "|---|---|---|---|---|---|",
              f"| POST /v1/payments | {g['post']['rps']:.0f} | {g['post']['p50_ms']:.2f} | {g['post']['p99_ms']:.2f} | "
              f"{g['post']['non_2xx']} | {ratio(g['post']['rps'], f_same):.2f} of (f) |",
              f"| GET /v1/payments/{{id}} | {g['get']['rps']:.0f} | {g['get']['p50_ms']:.2f} | {g['get']['p99_ms']:.2f} | "
              f"{g['get']['non_2xx']} | |", "", f"Gateway peak RSS: {g['peak_rss_mib']} MiB", "",
              *scale_out_lines(r),
              "## Growth", "",
              "| payments | preload s | (b) tps | get p50 ms | get p99 ms¹ | list p50 ms | list p99 ms¹ |",
              "|---|---|---|---|---|---|---|"]
    for size, row in r["growth"].items():
        lines.append(f"| {row['payments']:,} | {row['preload_seconds']} | {row['create_tps']:.0f} | {row['get']['p50_ms']:.2f} | "
                     f"{row['get']['p99_ms']:.2f} | {row['list']['p50_ms']:.2f} | {row['list']['p99_ms']:.2f} |")
    sizes = list(r["growth"])
    first, last = r["growth"][sizes[0]], r["growth"][sizes[-1]]
    lines += ["", f"¹ of three {r['machine']['seconds_per_run']} s runs, the one with the median p99", "",
              f"p99 at {sizes[-1]:,} vs {sizes[0]:,}: get {ratio(last['get']['p99_ms'], first['get']['p99_ms']):.2f}×, "
                  f"list {ratio(last['list']['p99_ms'], first['list']['p99_ms']):.2f}×", ""]
    text = "\n".join(lines)
    (out / f"{stamp}.md").write_text(text)
    (out / f"{stamp}.json").write_text(json.dumps(r, indent=2, default=str))
    (out / "latest.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()

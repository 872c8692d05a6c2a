#!/usr/bin/env python3
"""Runs end-to-end test suites side by side, each against a database of its own.

    scripts/e2e.py [--jobs N] [--createdb CMD] [--filter NAME] [--skip NAME]... SUITE...

The suites are the modules of the one end-to-end test binary (tests/tests/e2e/). Each
SUITE gets a fresh database, `<dbname>_<suite>` beside
the one PAYMENTS_TEST_DATABASE_URL names, made by CMD (default `scripts/cluster.sh
createdb`; N at a time), and runs with its tests one at a time (they share that database
and its gateway workers) while up to N suites run at once, in the order given (longest
first keeps the wall time short). With --filter, the tests whose names contain NAME run
in one database, one at a time. After each, the ledger's trial balance must be zero.
Each suite's output goes to
.run/e2e/<suite>.log; failures are printed whole. The other PAYMENTS_* variables
pass through unchanged.
"""

import argparse
import concurrent.futures
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOGS = ROOT / ".run/e2e"
# Login roles the suites make if missing (roles belong to the cluster, not a database):
# made once here, so that two suites never race to create one.
SHARED_ROLES = [("payments_e2e_gateway", "payments_gateway"), ("payments_e2e_worker", "payments_worker"),
                ("payments_e2e_reader", "payments_reader")]


def executable():
    """The end-to-end test binary, built if needed."""
    out = subprocess.run(["cargo", "test", "--package", "payments-e2e", "--test", "e2e", "--no-run",
                          "--message-format=json"], cwd=ROOT, check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        msg = json.loads(line)
        if msg.get("reason") == "compiler-artifact" and msg.get("executable") and msg["target"]["name"] == "e2e":
            return msg["executable"]
    sys.exit("e2e: cargo built no e2e test binary")


def with_dbname(url, dbname):
    return " ".join([kv for kv in url.split() if not kv.startswith("dbname=")] + [f"dbname={dbname}"])


def run(suite, binary, url, test_args):
    LOGS.mkdir(parents=True, exist_ok=True)
    log = LOGS / f"{suite}.log"
    started = time.time()
    with log.open("w") as out:
        code = subprocess.run([binary, "--test-threads=1", *test_args], cwd=ROOT / "tests",
                              env=dict(os.environ, PAYMENTS_TEST_DATABASE_URL=url),
                              stdout=out, stderr=subprocess.STDOUT).returncode
    text = log.read_text()
    summary = (re.findall(r"^test result: .*$", text, re.M) or ["no test result"])[-1]
    # Whatever the suite did, the ledger's debits equal its credits in every unit, and what each
    # credit grant keeps as left is what its transfers add up to.
    unbalanced = subprocess.run(["psql", url, "-XtAc", "SELECT concat_ws(', ', (SELECT string_agg(unit || ' ' || "
                                 "difference, ', ') FROM payments.trial_balance() WHERE difference <> 0 OR debits <> "
                                 "credits), (SELECT string_agg(g.id, ', ') FROM payments.credit_grants g WHERE "
                                 "g.remaining <> (SELECT coalesce(sum(CASE WHEN t.credit_account = 'credits' THEN "
                                 "t.amount ELSE -t.amount END), 0) FROM payments.ledger_transfers t WHERE "
                                 "t.customer_id = g.customer_id AND t.grant_id = g.id)))"],
                                capture_output=True, text=True)
    if unbalanced.returncode != 0 or unbalanced.stdout.strip():
        code = code or 1
        text += f"\ne2e: the trial balance after {suite} is not zero: {unbalanced.stdout.strip()}{unbalanced.stderr}\n"
        summary += " (TRIAL BALANCE NOT ZERO)"
    return suite, code, time.time() - started, summary, text


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("suites", nargs="+")
    ap.add_argument("--jobs", type=int, default=3)
    ap.add_argument("--createdb", default=str(ROOT / "scripts/cluster.sh") + " createdb")
    ap.add_argument("--filter", default="")
    ap.add_argument("--skip", action="append", default=[])
    args = ap.parse_args()
    base = os.environ["PAYMENTS_TEST_DATABASE_URL"]
    base_db = re.search(r"dbname=(\S+)", base).group(1)
    binary = executable()
    # With a filter, one run over every suite; otherwise one run per suite, its module's tests.
    runs = {"filtered": [args.filter]} if args.filter else {suite: [f"{suite}::"] for suite in args.suites}
    urls = {name: with_dbname(base, f"{base_db}_{name}") for name in runs}
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for made in pool.map(lambda name: subprocess.run(args.createdb.split() + [f"{base_db}_{name}"],
                                                         stdout=subprocess.DEVNULL), runs):
            made.check_returncode()
    roles = "".join(f"IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{login}') THEN "
                    f"CREATE ROLE {login} LOGIN IN ROLE {group}; END IF; " for login, group in SHARED_ROLES)
    subprocess.run(["psql", next(iter(urls.values())), "-Xqc", f"DO $$ BEGIN {roles} END $$"], check=True)
    skips = [a for s in args.skip for a in ("--skip", s)]
    started, results = time.time(), []
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = [pool.submit(run, name, binary, urls[name], filters + skips) for name, filters in runs.items()]
        for future in concurrent.futures.as_completed(futures):
            suite, code, seconds, summary, text = future.result()
            results.append((suite, code, seconds, summary))
            print(f"e2e {suite:12} {seconds:5.0f}s  {summary}", flush=True)
            if code != 0:
                print(text, flush=True)
    failed = [r[0] for r in results if r[1] != 0]
    print(f"e2e: {len(results)} suites in {time.time() - started:.0f}s, {args.jobs} at a time"
          + (f"; FAILED: {', '.join(failed)}" if failed else ""), flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()

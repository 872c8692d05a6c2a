#!/usr/bin/env python3
"""Carries SQL changes into the release's upgrade script.

Until upgrade scripts are generated, every object of sql/*.sql is written
twice: in its file, and in sql/releases/payments--<previous>--<current>.sql.
This copies each statement of the given sql/ files that changed since git's
HEAD (a table, a column or function comment, a function, a view, an index, a
trigger) over the upgrade script's statement of the same object, and inserts
the objects the script does not have yet before its privileges section, in the
order of the files. Grants and other statements are carried by hand. The
upgrade test (tests/tests/upgrade.rs) then proves the result equals a fresh
install.

    scripts/sync-release.py sql/billing.sql sql/subscriptions.sql ...
"""

import re
import subprocess
import sys
from pathlib import Path

RELEASE = Path(__file__).resolve().parent.parent / "sql/releases/payments--0.2.0--0.3.0.sql"
NEW_OBJECTS_BEFORE = "-- Privileges of the new functions and tables"


def statements(text):
    """(start, end) of each statement: semicolons outside quotes, $$ bodies and comments."""
    spans, start, i, n = [], 0, 0, len(text)
    while i < n:
        if text.startswith("--", i):
            i = text.find("\n", i)
            i = n if i < 0 else i
        elif text[i] == "'":
            i = text.find("'", i + 1) + 1
            while text.startswith("'", i):
                i = text.find("'", i + 1) + 1
            continue
        elif text.startswith("$$", i):
            i = text.find("$$", i + 2) + 2
            continue
        elif text[i] == ";":
            spans.append((start, i + 1))
            start = i + 1
        i += 1
    return spans


def body(text, span):
    """A statement without the comment lines and blank lines before it."""
    lines = text[span[0]:span[1]].split("\n")
    while lines and (not lines[0].strip() or lines[0].lstrip().startswith("--")):
        lines.pop(0)
    return "\n".join(lines)


KEYS = [
    (r"CREATE (?:OR REPLACE )?FUNCTION (payments\.\"?\w+\"?)\(", "function"),
    (r"COMMENT ON FUNCTION (payments\.\"?\w+\"?)\(", "comment function"),
    (r"CREATE TABLE (payments\.\w+)", "table"),
    (r"CREATE (?:OR REPLACE )?VIEW (payments\.\w+)", "view"),
    (r"CREATE TYPE (payments\.\w+)", "type"),
    (r"COMMENT ON (TABLE|COLUMN|VIEW|TYPE) (payments\.[\w.]+)", "comment"),
    (r"CREATE (?:UNIQUE )?INDEX (\w+)", "index"),
    (r"CREATE TRIGGER (\w+)", "trigger"),
]


def key(statement):
    for pattern, kind in KEYS:
        m = re.match(pattern, statement)
        if m:
            return (kind,) + m.groups()
    return None


def main(files):
    release = RELEASE.read_text()
    spans = statements(release)
    where = {}
    for span in spans:
        k = key(body(release, span))
        if k:
            where.setdefault(k, []).append(span)
    replacements, new = [], []
    for file in files:
        text = Path(file).read_text()
        head = subprocess.run(["git", "show", f"HEAD:{file}"], capture_output=True, text=True).stdout
        unchanged = {body(head, span) for span in statements(head)}
        seen = set()
        for span in statements(text):
            stmt = body(text, span)
            k = key(stmt)
            if not k or stmt in unchanged:
                continue
            assert k not in seen, f"{file}: {k} twice (overloads are not synced)"
            seen.add(k)
            if k not in where:
                # A table an earlier release made is changed by ALTER TABLE in the delta, by hand.
                if k[0] == "table" and f"ALTER TABLE {k[1]} " in release:
                    continue
                new.append(stmt)
                continue
            # The last occurrence is what the upgrade leaves.
            old_span = where[k][-1]
            old = body(release, old_span)
            if old.startswith("CREATE OR REPLACE") and not stmt.startswith("CREATE OR REPLACE"):
                stmt = stmt.replace("CREATE ", "CREATE OR REPLACE ", 1)
            if old != stmt:
                replacements.append((old_span[1] - len(old), old_span[1], stmt))
    for start, end, stmt in sorted(replacements, reverse=True):
        release = release[:start] + stmt + release[end:]
    if new:
        at = release.index(NEW_OBJECTS_BEFORE)
        at = release.rindex("\n-- ----", 0, at) + 1
        release = release[:at] + "\n\n".join(new) + "\n\n" + release[at:]
    RELEASE.write_text(release)
    print(f"sync-release: {len(replacements)} statements replaced, {len(new)} added")


if __name__ == "__main__":
    main(sys.argv[1:])

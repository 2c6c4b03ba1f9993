#!/usr/bin/env python3
"""Runs every SQL statement Vigil's ClickHouse backend sends through chdb, an
in-process current ClickHouse engine, to check that the schema written for
the 18.16 server CI can install also works on current releases.

    CLICKHOUSE_SQL_DUMP=/tmp/sql.txt cargo test -p vigil-storage dump_sql
    python3 scripts/check-modern-clickhouse.py /tmp/sql.txt

Prints the engine version and one line per statement; exits 1 on the first
failure, naming the statement.
"""
import sys
import tempfile

from chdb import session


def main() -> int:
    path = sys.argv[1]
    statements = [line.strip() for line in open(path) if line.strip()]
    with tempfile.TemporaryDirectory() as data:
        s = session.Session(data)
        version = str(s.query("SELECT version()", "CSV")).strip()
        print(f"chdb engine {version}: checking {len(statements)} statements")
        for i, sql in enumerate(statements, 1):
            try:
                result = s.query(sql, "TSV")
            except Exception as e:  # chdb raises on SQL errors
                print(f"FAILED statement {i}: {sql}\n  {e}")
                return 1
            rows = str(result).strip().replace("\n", " | ")
            # A stack stored twice (a retried write) counts once.
            if "sum(value)" in sql and rows != "['main','serve']\t5":
                print(f"FAILED statement {i}: expected one copy of the stack, got {rows!r}")
                return 1
            # Reads must see what was written: the newest version wins.
            if "FROM vigil_check.metric_samples" in sql and ("argMax" in sql or "LIMIT 1 BY" in sql):
                if rows != "1\t1702080000000\t0.7":
                    print(f"FAILED statement {i}: expected the newest version, got {rows!r}")
                    return 1
            print(f"ok {i}: {sql[:90]}{'…' if len(sql) > 90 else ''}" + (f"  -> {rows[:80]}" if rows else ""))
    print("all statements ran on the modern engine")
    return 0


if __name__ == "__main__":
    sys.exit(main())

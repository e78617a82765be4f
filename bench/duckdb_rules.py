"""Runs the segment benchmark's rules in DuckDB on the data Siyu exported.

Usage: duckdb_rules.py DATA_DIR QUERIES_JSON RUNS
Loads DATA_DIR/{profiles,tags,guides,staff,events}.csv into an in-memory DuckDB with
all threads, runs the setup statements (saved segments kept as tables, as Siyu keeps
their members), then runs each query RUNS times; prints one JSON object per query:
{"name", "count", "median_ms", "p99_ms"}. Loading and setup are not timed into the
queries.
"""
import json
import os
import statistics
import sys
import time

import duckdb


def main() -> int:
    data, queries_path, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
    con = duckdb.connect()
    con.execute(f"SET threads TO {os.cpu_count()}")
    started = time.perf_counter()
    for table in ["profiles", "tags", "guides", "staff", "events"]:
        path = os.path.join(data, f"{table}.csv")
        con.execute(f"CREATE TABLE {table} AS SELECT * FROM read_csv('{path}', header = true, auto_detect = true)")
    print(json.dumps({"loaded_seconds": time.perf_counter() - started}), flush=True)
    with open(queries_path) as f:
        queries = json.load(f)
    for q in [q for q in queries if "setup" in q]:
        t = time.perf_counter()
        con.execute(q["setup"])
        print(json.dumps({"name": q["name"], "setup_seconds": time.perf_counter() - t}), flush=True)
    for q in [q for q in queries if "sql" in q]:
        times = []
        count = None
        for _ in range(runs):
            t = time.perf_counter()
            count = con.execute(q["sql"]).fetchone()[0]
            times.append((time.perf_counter() - t) * 1000.0)
        times.sort()
        p99 = times[min(len(times) - 1, round(0.99 * (len(times) - 1)))]
        print(json.dumps({"name": q["name"], "count": count, "median_ms": statistics.median(times), "p99_ms": p99}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Native decode speed of backflow_sdk's JSON row batches (the boundary benchmark's table:
500-row batches of id, email, name, plan, mrr decimal, country, updated_at timestamp).

    python3 plugin-sdk/python/bench_decode.py [--batches N]

Prints rows/s for: json.loads alone, decode every row and read one field (email, mrr,
updated_at), one column, every row as a dict, and building a batch. Inside a component
(CPython compiled to WebAssembly) expect 2-5x less; `cargo bench --bench
plugin_boundary` measures that, through the engine's host code."""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from backflow_sdk import Batch, BatchBuilder, Column  # noqa: E402

COLUMNS = [
    Column("id", "integer"),
    Column("email", "text"),
    Column("name", "text"),
    Column("plan", "text"),
    Column("mrr", "decimal"),
    Column("country", "text"),
    Column("updated_at", "timestamp"),
]


def payload(first):
    rows = []
    for g in range(first, first + 500):
        rows.append(
            [
                g,
                f"user{g}@example.com",
                f"User {g}",
                ["free", "pro", "enterprise"][g % 3],
                f"{g % 2000}.{g % 100:02d}",
                ["DE", "FR", "US", "JP", "BR"][g % 5],
                f"2024-01-01T{g // 3600 % 24:02d}:{g // 60 % 60:02d}:{g % 60:02d}Z",
            ]
        )
    return json.dumps(rows, separators=(",", ":")).encode()


def main():
    n = int(sys.argv[sys.argv.index("--batches") + 1]) if "--batches" in sys.argv else 400
    payloads = [payload(i * 500) for i in range(20)]

    def bench(label, fn):
        start = time.perf_counter()
        for i in range(n):
            fn(payloads[i % len(payloads)])
        elapsed = time.perf_counter() - start
        print(f"{label:<34} {n * 500 / elapsed:>12,.0f} rows/s")

    def read(field):
        def fn(p):
            count = 0
            for row in Batch(COLUMNS, 500, p):
                if row[field] is not None:
                    count += 1
            assert count == 500

        return fn

    print(f"Python {sys.version.split()[0]}, {n} batches of 500 rows ({len(payloads[0])} bytes each)")
    bench("json.loads only", json.loads)
    bench("every row, read email (text)", read("email"))
    bench("every row, read mrr (decimal)", read("mrr"))
    bench("every row, read updated_at (ts)", read("updated_at"))
    bench("batch.column('email')", lambda p: Batch(COLUMNS, 500, p).column("email"))
    bench("batch.dicts() (every field)", lambda p: Batch(COLUMNS, 500, p).dicts())
    dicts = Batch(COLUMNS, 500, payloads[0]).dicts()
    bench("BatchBuilder from dicts", lambda p: BatchBuilder(COLUMNS).extend(dicts).build())


if __name__ == "__main__":
    main()

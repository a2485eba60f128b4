"""Run benchmarks and regenerate BENCHMARKS.md: `python -m bench [name ...]` (default: all, in order)."""

from __future__ import annotations

import importlib
import sys
import time

from bench import scale
from bench.common import machine, save, write_benchmarks_md

ORDER = [
    "throughput",
    "quality",
    "distributed",
    "movielens",
    "retrieval",
    "serve",
    "events",
    "search",
    "scaling",
    "scale",
]


def main(names: list[str]) -> int:
    unknown = set(names) - set(ORDER)
    if unknown:
        print(f"unknown benchmark(s): {', '.join(sorted(unknown))}; choose from {', '.join(ORDER)}", file=sys.stderr)
        return 2
    print("machine:", machine(), flush=True)
    failed = []
    # the million-item section takes ~25 min: `make bench` runs it with BENCH_SCALE=1 (or by name)
    for name in names or [n for n in ORDER if n != "scale" or scale.enabled()]:
        t0 = time.perf_counter()
        print(f"== bench {name}", flush=True)
        try:
            result = importlib.import_module(f"bench.{name}").run()
        except Exception as exc:  # one failing benchmark must not hide the others' numbers
            print(f"!! bench {name} failed: {type(exc).__name__}: {exc}", flush=True)
            failed.append(name)
            continue
        result.seconds = time.perf_counter() - t0
        print(f"   wrote {save(result)} in {result.seconds:.1f} s", flush=True)
    print("updated", write_benchmarks_md(ORDER))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

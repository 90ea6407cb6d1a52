"""Same-sitting A/B of filter builds: Envoy CPU per request and throughput, alternated.

    .venv/bin/python tests/bench/ab.py before=/tmp/a.wasm after=target/wasm/tollgate_filter.wasm

Each round runs bare Envoy once, then every build on each case (the plain key, and the key
with limits and budgets of bench.py), each on a fresh stack, in a rotating order so no
build always goes first. Envoy runs one worker pinned to CPU 0; oha, the provider and
the control plane share CPU 1. Prints every round and the medians; asserts nothing.
Needs the release binaries and oha that `./dev bench` builds and installs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
os.environ.setdefault("TOLLGATE_PROFILE", "release")

from tests.bench import bench  # noqa: E402
from tests.harness import stack as stack_module  # noqa: E402


def measure(case: bench.Case, args) -> tuple[float, float]:
    url = case.url + "/v1/chat/completions"
    bench.oha(url, case.key, bench.BODY, seconds=args.warmup)
    cpu0 = bench.cpu_seconds(case.pid)
    load = bench.oha(url, case.key, bench.BODY, seconds=args.duration)
    cpu = (bench.cpu_seconds(case.pid) - cpu0) / max(load.requests, 1) * 1e6
    if load.failures:
        print(f"  ! {load.failures} failed requests", flush=True)
    return load.rps, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("builds", nargs="+", help="name=path of a filter .wasm")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--duration", type=float, default=5)
    ap.add_argument("--warmup", type=float, default=2)
    ap.add_argument("--cases", default="plain,limits", help="comma-separated: plain, limits")
    ap.add_argument("--no-pin", action="store_true")
    args = ap.parse_args()
    builds = [(b.split("=", 1)[0], Path(b.split("=", 1)[1]).resolve()) for b in args.builds]
    cases = args.cases.split(",")
    tmp = Path(tempfile.mkdtemp(prefix="tollgate-ab-"))
    provider = bench.Provider_(tmp, "0-1" if args.no_pin else "1")
    results: dict[str, list[tuple[float, float]]] = {}
    n = 0
    try:
        for r in range(args.rounds):
            runs = [("bare", None, False)]
            order = builds[r % len(builds):] + builds[:r % len(builds)]
            for case in cases:
                runs += [(f"{name} {case}", path, case == "limits") for name, path in order]
            for label, path, limited in runs:
                n += 1
                if path is not None:
                    stack_module.WASM = path
                c, s = bench.run_envoy_case(f"r{n}", tmp, provider, path is not None, args,
                                            None, limited)
                try:
                    rps, cpu = measure(c, args)
                finally:
                    s.stop()
                results.setdefault(label, []).append((rps, cpu))
                print(f"round {r + 1} {label:>20}: {rps:8,.0f} req/s  {cpu:6.1f} us/req", flush=True)
    finally:
        provider.stop()
    bare_rps = statistics.median(x[0] for x in results["bare"])
    print("\n| case | req/s median | ratio to bare | Envoy CPU us/req median | per round us/req |")
    print("|---|---|---|---|---|")
    for label, xs in results.items():
        rps = statistics.median(x[0] for x in xs)
        cpu = statistics.median(x[1] for x in xs)
        rounds = " · ".join(f"{x[1]:.0f}" for x in xs)
        print(f"| {label} | {rps:,.0f} | {rps / bare_rps:.2f}x | {cpu:.1f} | {rounds} |")


if __name__ == "__main__":
    main()

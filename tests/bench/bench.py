"""Side-by-side throughput of the same Envoy with and without the Tollgate filter.

Run with `./dev bench` (release builds). Each case starts its own stack on free ports,
warms up, then drives it with wrk for a fixed time; the cases run one after another in
the same sitting so their ratios are comparable. Prints, per case: requests/s, latency
percentiles, Envoy CPU time per request and Envoy peak RSS, and the ratio to bare Envoy.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.harness.stack import WASM, Provider, Stack  # noqa: E402

HERE = Path(__file__).resolve().parent
MODEL = "gpt-4o-mini"
BODY = json.dumps({"model": MODEL, "messages": [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Write one sentence about gateways."}]})
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Result:
    name: str
    rps: float
    p50_ms: float
    p99_ms: float
    p999_ms: float
    cpu_us_per_req: float
    peak_rss_mib: float
    non_2xx: int
    errors: int


def proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def proc_peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def wrk(url: str, key: str, seconds: int, connections: int, threads: int) -> dict:
    env = {**os.environ, "BENCH_BODY": BODY, "BENCH_KEY": key, "BENCH_PROVIDER": "offline"}
    out = subprocess.run(
        ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s", "--timeout", "10s",
         "-s", str(HERE / "report.lua"), url + "/v1/chat/completions"],
        env=env, capture_output=True, text=True, check=True)
    line = next(x for x in out.stdout.splitlines() if x.startswith("BENCH_JSON "))
    return json.loads(line[len("BENCH_JSON "):])


def run_case(name: str, with_filter: bool, args) -> Result:
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
        stack = Stack(workdir=Path(tmp), providers=[Provider("offline", {MODEL: (0.15, 0.6, 0.075, 0.0)})],
                      with_filter=with_filter, envoy_concurrency=args.envoy_workers, key_cache_ttl_ms=60_000)
        stack.start()
        try:
            key = stack.create_key("bench")
            envoy = next(p for p in stack.procs if p.name == "envoy").popen.pid
            wrk(stack.gateway_url, key, args.warmup, args.connections, args.threads)
            cpu0 = proc_cpu_seconds(envoy)
            r = wrk(stack.gateway_url, key, args.duration, args.connections, args.threads)
            cpu = proc_cpu_seconds(envoy) - cpu0
            return Result(
                name=name,
                rps=r["requests"] / (r["duration_us"] / 1e6),
                p50_ms=r["p50_us"] / 1000, p99_ms=r["p99_us"] / 1000, p999_ms=r["p999_us"] / 1000,
                cpu_us_per_req=cpu / max(r["requests"], 1) * 1e6,
                peak_rss_mib=proc_peak_rss_mib(envoy),
                non_2xx=r["non_2xx"],
                errors=r["connect_errors"] + r["read_errors"] + r["timeouts"],
            )
        finally:
            stack.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=int, default=10, help="seconds measured per case")
    ap.add_argument("--warmup", type=int, default=3, help="seconds of warm-up per case, not measured")
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1, help="wrk threads")
    ap.add_argument("--envoy-workers", type=int, default=1)
    args = ap.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk not found (./dev bench installs it)")
    if os.environ.get("TOLLGATE_PROFILE") != "release":
        print("note: TOLLGATE_PROFILE is not 'release'; native binaries are debug builds", file=sys.stderr)

    print(f"filter: {WASM} ({WASM.stat().st_size / 1024:.0f} KiB); wrk -c {args.connections} "
          f"-t {args.threads}, {args.duration}s after {args.warmup}s warm-up; Envoy workers: {args.envoy_workers}")
    results = [run_case("bare-envoy", False, args), run_case("envoy+tollgate", True, args)]
    base = results[0].rps
    print(f"\n{'case':16} {'req/s':>9} {'ratio':>6} {'p50 ms':>7} {'p99 ms':>7} {'p99.9 ms':>8} "
          f"{'cpu us/req':>10} {'peak RSS MiB':>12} {'non-2xx':>7} {'errors':>6}")
    for r in results:
        print(f"{r.name:16} {r.rps:9.0f} {r.rps / base:6.2f} {r.p50_ms:7.2f} {r.p99_ms:7.2f} {r.p999_ms:8.2f} "
              f"{r.cpu_us_per_req:10.1f} {r.peak_rss_mib:12.1f} {r.non_2xx:7d} {r.errors:6d}")
    if any(r.non_2xx or r.errors for r in results):
        sys.exit("some requests failed; the figures above are not comparable")


if __name__ == "__main__":
    main()

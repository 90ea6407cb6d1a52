"""Tollgate's side-by-side benchmark: the same load against the provider alone, bare Envoy,
Envoy with the Tollgate filter, the filter with exact prompt counting, and (with
--litellm) LiteLLM's proxy, in one sitting on loopback.

Run it with `./dev bench` (release builds, oha and taskset set up). It prints every figure
and, with --write, puts them in BENCHMARKS.md with the machine, versions and command.
Nothing here asserts a speed: targets are read off the printed ratios.

Envoy runs one worker pinned to CPU 0; the load generator, the provider and the control
plane share CPU 1, so Envoy's CPU per request is measured on a core of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.harness.stack import (  # noqa: E402
    ROOT, WASM, WASM_COUNT, Provider, Stack, envoy_bin, free_port, native_bin, request)

MODEL = "gpt-4o-mini"
PRICE = (0.15, 0.6, 0.075, 0.0)
MESSAGES = [{"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Write one sentence about gateways."}]
BODY = json.dumps({"model": MODEL, "messages": MESSAGES})
STREAM_BODY = json.dumps({"model": MODEL, "messages": MESSAGES, "stream": True})
CLK_TCK = os.sysconf("SC_CLK_TCK")
OHA = ROOT / ".tools" / "bin" / "oha"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mib(pid: int, field_name: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class Load:
    rps: float
    p50_ms: float
    p99_ms: float
    p999_ms: float
    ttfb_p50_ms: float
    requests: int
    failures: int


def oha(url: str, key: str, body: str, seconds: float = 0, requests: int = 0, rate: int = 0,
        connections: int = 32, extra_headers: dict | None = None) -> Load:
    """Drives `url` with oha; `rate` > 0 is a fixed request rate, else as fast as possible."""
    argv = [str(OHA), "--no-tui", "--output-format", "json", "-c", str(connections), "-m", "POST",
            "-T", "application/json", "-d", body, "-H", f"Authorization: Bearer {key}",
            "-H", "x-tollgate-provider: offline"]
    for k, v in (extra_headers or {}).items():
        argv += ["-H", f"{k}: {v}"]
    argv += ["-n", str(requests)] if requests else ["-z", f"{seconds}s"]
    if rate:
        argv += ["-q", str(rate), "--latency-correction"]
    out = subprocess.run([*argv, url], capture_output=True, text=True, check=True,
                         timeout=max(seconds, requests / 500) + 120)
    d = json.loads(out.stdout)
    codes = d.get("statusCodeDistribution", {})
    ok = codes.get("200", 0)
    total = sum(codes.values()) + sum(v for k, v in d.get("errorDistribution", {}).items()
                                      if "deadline" not in k)
    p = d["latencyPercentiles"]
    fb = d.get("firstBytePercentiles") or {}
    return Load(rps=ok / d["summary"]["total"], p50_ms=p["p50"] * 1e3, p99_ms=p["p99"] * 1e3,
                p999_ms=p["p99.9"] * 1e3, ttfb_p50_ms=(fb.get("p50") or 0) * 1e3,
                requests=ok, failures=total - ok)


@dataclass
class Case:
    name: str
    url: str
    key: str
    pid: int  # the process whose CPU and memory are measured
    max: Load | None = None
    fixed: Load | None = None
    cpu_us_per_req: float = 0.0
    peak_rss_mib: float = 0.0
    notes: list[str] = field(default_factory=list)


def measure(case: Case, args) -> Case:
    oha(case.url + "/v1/chat/completions", case.key, BODY, seconds=args.warmup)
    cpu0 = cpu_seconds(case.pid)
    case.max = oha(case.url + "/v1/chat/completions", case.key, BODY, seconds=args.duration)
    case.cpu_us_per_req = (cpu_seconds(case.pid) - cpu0) / max(case.max.requests, 1) * 1e6
    case.fixed = oha(case.url + "/v1/chat/completions", case.key, BODY, seconds=args.duration, rate=args.rate)
    case.peak_rss_mib = rss_mib(case.pid, "VmHWM")
    return case


class Provider_:
    """The one offline provider every case talks to, pinned to the helper CPU."""

    def __init__(self, workdir: Path, cpus: str):
        self.port = free_port()
        self.log = open(workdir / "provider.log", "ab")
        argv = [str(native_bin("tollgate-offline-provider")), "--listen", f"127.0.0.1:{self.port}",
                "--name", "offline"]
        if shutil.which("taskset"):
            argv = ["taskset", "-c", cpus, *argv]
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if request("GET", f"http://127.0.0.1:{self.port}/_offline/health", timeout=1)[0] == 200:
                    return
            except OSError:
                time.sleep(0.05)
        raise TimeoutError("offline provider did not start")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)


def envoy_stack(workdir: Path, provider_port: int, with_filter: bool, args, settings: dict | None = None,
                workers: int = 1) -> Stack:
    return Stack(workdir=workdir, providers=[Provider("offline", {MODEL: PRICE}, port=provider_port, start=False)],
                 with_filter=with_filter, envoy_concurrency=workers, key_cache_ttl_ms=600_000,
                 filter_settings=settings or {}, envoy_cpus=None if args.no_pin else "0",
                 helper_cpus=None if args.no_pin else "1")


# Limits and budgets so large the load never reaches them: every call is still taken from
# the key's and its user's request and token windows and held against both budgets.
LIMITED_KEY = ["--rpm", "4000000000", "--tpm", "1000000000000", "--user", "bench-user"]
LIMITED_USER = ["users", "limit", "bench-user", "--rpm", "4000000000", "--tpm", "1000000000000"]


def run_envoy_case(name: str, tmp: Path, provider: Provider_, with_filter: bool, args,
                   settings: dict | None = None, limited: bool = False) -> tuple[Case, Stack]:
    stack = envoy_stack(tmp / name, provider.port, with_filter, args, settings).start()
    if limited:
        key = stack.cli("keys", "create", "--name", "bench", "--quiet", *LIMITED_KEY).strip()
        stack.cli(*LIMITED_USER)
        stack.cli("budgets", "set", "--key", stack.key_id("bench"), "--period", "month", "--usd", "1000000")
        stack.cli("budgets", "set", "--user", "bench-user", "--period", "day", "--usd", "1000000")
    else:
        key = stack.create_key("bench")
    return Case(name, stack.gateway_url, key, stack.pid("envoy")), stack


def litellm_case(tmp: Path, provider: Provider_, args) -> tuple[Case, subprocess.Popen] | None:
    venv = ROOT / ".venv-litellm"
    if not (venv / "bin" / "litellm").exists():
        print("installing LiteLLM's proxy into .venv-litellm (once)…", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "litellm[proxy]"], check=True)
    port = free_port()
    config = tmp / "litellm.yaml"
    config.write_text(f"""model_list:
  - model_name: {MODEL}
    litellm_params:
      model: openai/{MODEL}
      api_base: http://127.0.0.1:{provider.port}/v1
      api_key: offline
general_settings:
  master_key: sk-bench-litellm
litellm_settings:
  telemetry: false
""")
    log = open(tmp / "litellm.log", "ab")
    argv = [str(venv / "bin" / "litellm"), "--config", str(config), "--host", "127.0.0.1",
            "--port", str(port), "--num_workers", "1"]
    if not args.no_pin:
        argv = ["taskset", "-c", "0", *argv]
    env = {**os.environ, "LITELLM_LOG": "ERROR", "LITELLM_TELEMETRY": "False"}
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            status, _, _ = request("GET", f"http://127.0.0.1:{port}/health/liveliness", timeout=2)
            if status == 200:
                return Case("litellm", f"http://127.0.0.1:{port}", "sk-bench-litellm", proc.pid), proc
        except OSError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.5)
    proc.kill()
    print(f"LiteLLM did not start; see {tmp / 'litellm.log'}", file=sys.stderr)
    return None


async def hold_streams(port: int, key: str, count: int, fault: str) -> tuple[int, int, float]:
    """Opens `count` streams at once; returns (completed, failed, seconds)."""
    body = STREAM_BODY.encode()
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nx-offline-fault: {fault}\r\n"
            "Connection: close\r\n\r\n").encode()

    async def one() -> bool:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(head + body)
            await writer.drain()
            data = await asyncio.wait_for(reader.read(-1), timeout=60)
            writer.close()
            return data.startswith(b"HTTP/1.1 200") and b"data: [DONE]" in data
        except (OSError, asyncio.TimeoutError):
            return False

    started = time.monotonic()
    results = await asyncio.gather(*(one() for _ in range(count)))
    ok = sum(results)
    return ok, count - ok, time.monotonic() - started


STREAM_RATE = 200
STREAM_PACE_MS = 2


def stream_load(case: Case, args) -> Load:
    """Streamed chat completions at a fixed rate, the provider pacing its events, so the
    figures are latency, not queueing."""
    pace = {"x-offline-fault": f"slow={STREAM_PACE_MS}"}
    url = case.url + "/v1/chat/completions"
    oha(url, case.key, STREAM_BODY, seconds=args.warmup, connections=16, rate=STREAM_RATE, extra_headers=pace)
    return oha(url, case.key, STREAM_BODY, seconds=args.duration, connections=16, rate=STREAM_RATE,
               extra_headers=pace)


def stream_events() -> int:
    """How many events the offline provider sends for the benchmark's stream request."""
    words = len(f"Hello from the offline provider serving {MODEL}. You said: "
                f"{MESSAGES[-1]['content']}".split())
    return 1 + words + 1 + 1  # role chunk, one per word, finish chunk, [DONE]


LONG_PROMPT = " ".join(["The gateway meters every call to the provider, streamed or not,"
                        " and prices each token exactly."] * 60)


def tokenizer_costs(tmp: Path, provider: Provider_, args) -> dict:
    """What the counting build costs: start, idle and loaded memory, CPU per 1k tokens."""
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": LONG_PROMPT}]})
    out = {"sizes": (WASM.stat().st_size / 1e6, WASM_COUNT.stat().st_size / 1e6)}
    for label, settings in (("default", None), ("count", {"count_prompt_tokens": True})):
        out[label] = {"ready": ready_time(tmp, provider, args, settings=settings)}
        s = envoy_stack(tmp / f"tok-{label}", provider.port, True, args, settings=settings).start()
        try:
            key = s.create_key("bench")
            out[label]["idle_rss"] = rss_mib(s.pid("envoy"))
            status, _, data = request("POST", s.gateway_url + "/v1/chat/completions", json.loads(body),
                                      {"authorization": f"Bearer {key}"})
            assert status == 200, data
            out["prompt_tokens"] = json.loads(data)["usage"]["prompt_tokens"]
            out[label]["loaded_rss"] = rss_mib(s.pid("envoy"))
            url = s.gateway_url + "/v1/chat/completions"
            oha(url, key, body, seconds=args.warmup)
            cpu0 = cpu_seconds(s.pid("envoy"))
            load = oha(url, key, body, seconds=args.duration)
            out[label]["cpu_us"] = (cpu_seconds(s.pid("envoy")) - cpu0) / max(load.requests, 1) * 1e6
            out[label]["rps"] = load.rps
        finally:
            s.stop()
    return out


def ready_time(tmp: Path, provider: Provider_, args, runs: int = 3, settings: dict | None = None) -> float:
    times = []
    for i in range(runs):
        name = f"ready{i}-{'count' if settings else 'default'}"
        s = envoy_stack(tmp / name, provider.port, True, args, settings=settings).start()
        times.append(s.envoy_ready_seconds)
        s.stop()
    return sorted(times)[len(times) // 2]


def two_workers_rss(tmp: Path, provider: Provider_, args) -> tuple[float, float]:
    s = envoy_stack(tmp / "rss2", provider.port, True, args, workers=2)
    s.envoy_cpus = None
    s.start()
    try:
        key = s.create_key("bench")
        oha(s.gateway_url + "/v1/chat/completions", key, BODY, seconds=args.duration)
        return rss_mib(s.pid("envoy")), rss_mib(s.pid("envoy"), "VmHWM")
    finally:
        s.stop()


def soak(tmp: Path, provider: Provider_, args) -> dict:
    s = envoy_stack(tmp / "soak", provider.port, True, args).start()
    try:
        key = s.create_key("bench")
        url = s.gateway_url + "/v1/chat/completions"
        oha(url, key, BODY, requests=50_000)
        time.sleep(1)
        before = {"envoy": rss_mib(s.pid("envoy")), "control plane": rss_mib(s.pid("control-plane"))}
        load = oha(url, key, BODY, requests=args.soak, connections=32)
        time.sleep(2)  # let the last usage batches land
        after = {"envoy": rss_mib(s.pid("envoy")), "control plane": rss_mib(s.pid("control-plane"))}
        stored = len(s.cli("usage", "list", "--limit", "1", "--json").splitlines())
        return {"requests": load.requests, "failures": load.failures, "before": before, "after": after,
                "stored_any": stored > 0}
    finally:
        s.stop()


def ingest() -> str:
    out = subprocess.run(["cargo", "bench", "-q", "-p", "tollgate-control-plane", "--bench", "ingest"],
                         cwd=ROOT, capture_output=True, text=True, check=True,
                         env={**os.environ, "TOLLGATE_BENCH_POSTGRES_URL":
                              os.environ.get("TOLLGATE_BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test")})
    return out.stdout.strip()


def versions() -> dict:
    def first_line(argv):
        try:
            return subprocess.run(argv, capture_output=True, text=True).stdout.strip().splitlines()[0]
        except (OSError, IndexError):
            return "unknown"
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {"machine": f"{os.cpu_count()} CPUs ({cpu}), {platform.system()} {platform.release()}",
            "envoy": first_line([envoy_bin(), "--version"]).split("version: ")[-1],
            "rustc": first_line(["rustc", "--version"]), "oha": first_line([str(OHA), "--version"]),
            "filter": f"{WASM.stat().st_size / 1e6:.2f} MB .wasm"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=10, help="seconds per measured run")
    ap.add_argument("--warmup", type=float, default=3, help="seconds of warm-up per case, not measured")
    ap.add_argument("--rate", type=int, default=1000, help="requests/s of the fixed-rate runs")
    ap.add_argument("--streams", type=int, default=1000, help="concurrent streams to hold")
    ap.add_argument("--soak", type=int, default=1_000_000, help="requests in the soak (0: skip)")
    ap.add_argument("--litellm", action="store_true", help="also measure LiteLLM's proxy")
    ap.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    ap.add_argument("--write", action="store_true", help="write the results to BENCHMARKS.md")
    ap.add_argument("--quick", action="store_true",
                    help="only the throughput table without the counting build (no streams, start-up, "
                         "tokenizer, soak or ingest): a same-sitting ratio in about a minute")
    args = ap.parse_args()
    if not OHA.exists():
        sys.exit(f"{OHA} not found: run ./dev bench, which installs it")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # Envoy and the stream test inherit it

    info = versions()
    print(json.dumps(info, indent=2), flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="tollgate-bench-"))
    provider = Provider_(tmp, "0-1" if args.no_pin else "1")
    results: list[Case] = []
    extra: dict = {}
    try:
        floor = Case("provider alone", f"http://127.0.0.1:{provider.port}", "none", provider.proc.pid)
        results.append(measure(floor, args))
        print(f"measured {floor.name}", flush=True)
        cases = [("bare envoy", False, None, False), ("envoy+tollgate", True, None, False),
                 ("envoy+tollgate+limits", True, None, True),
                 ("envoy+tollgate+count", True, {"count_prompt_tokens": True}, False)]
        if args.quick:
            cases = [c for c in cases if c[0] != "envoy+tollgate+count"]
        for name, with_filter, settings, limited in cases:
            case, stack = run_envoy_case(name.replace("+", "-").replace(" ", "-"), tmp, provider, with_filter,
                                         args, settings, limited)
            case.name = name
            try:
                results.append(measure(case, args))
                if args.quick:
                    continue
                if (with_filter and settings is None or not with_filter) and not limited:
                    extra.setdefault("stream", {})[name] = stream_load(case, args)
                if with_filter and settings is None and not limited:
                    port = int(case.url.rsplit(":", 1)[1])
                    extra["held"] = asyncio.run(hold_streams(port, case.key, args.streams, "slow=50"))
            finally:
                stack.stop()
            print(f"measured {name}", flush=True)
        if args.litellm:
            started = litellm_case(tmp, provider, args)
            if started:
                case, proc = started
                try:
                    results.append(measure(case, args))
                finally:
                    proc.terminate()
                    proc.wait(timeout=30)
                print("measured litellm", flush=True)
        if not args.quick:
            extra["ready"] = ready_time(tmp, provider, args)
            extra["tokenizer"] = tokenizer_costs(tmp, provider, args)
            extra["rss2"] = two_workers_rss(tmp, provider, args)
            if args.soak:
                extra["soak"] = soak(tmp, provider, args)
                print("soak done", flush=True)
            extra["ingest"] = ingest()
    finally:
        provider.stop()
    report = render(results, extra, info, args)
    print("\n" + report)
    if args.write and args.quick:
        print("not written: --quick leaves most of BENCHMARKS.md out")
    elif args.write:
        (ROOT / "BENCHMARKS.md").write_text(report)
        print("written to BENCHMARKS.md")


def render(results: list[Case], extra: dict, info: dict, args) -> str:
    by = {c.name: c for c in results}
    bare = by["bare envoy"]
    litellm = by.get("litellm")
    lines = ["# Benchmarks", "",
             f"Command: `./dev bench {' '.join(sys.argv[1:])}` on {time.strftime('%Y-%m-%d')}.", "",
             f"- Machine: {info['machine']}",
             f"- Envoy {info['envoy']}; {info['rustc']}; {info['oha']}; filter {info['filter']}",
             f"- Load: oha, 32 connections, {args.duration:g} s per run after {args.warmup:g} s of warm-up; "
             f"fixed-rate runs at {args.rate} req/s with latency correction.",
             "- Envoy: 1 worker pinned to CPU 0; provider, control plane and oha on CPU 1." if not args.no_pin
             else "- No CPU pinning.",
             "- Request: a 2-message chat completion (non-streaming), answered by the offline provider.", "",
             "## Throughput and latency", "",
             "| case | req/s (max) | vs bare Envoy | vs LiteLLM | p50 ms @max | p99 ms @max | "
             f"p50 ms @{args.rate}/s | p99 ms @{args.rate}/s | p99.9 ms @{args.rate}/s | "
             "CPU µs/req (measured process) | peak RSS MiB |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in results:
        vs_l = f"{c.max.rps / litellm.max.rps:.1f}x" if litellm else "n/a"
        lines.append(f"| {c.name} | {c.max.rps:,.0f} | {c.max.rps / bare.max.rps:.2f}x | {vs_l} | "
                     f"{c.max.p50_ms:.2f} | {c.max.p99_ms:.2f} | {c.fixed.p50_ms:.3f} | {c.fixed.p99_ms:.3f} | "
                     f"{c.fixed.p999_ms:.3f} | {c.cpu_us_per_req:.1f} | {c.peak_rss_mib:.1f} |")
        if c.max.failures or c.fixed.failures:
            lines.append(f"|  ⚠ {c.max.failures + c.fixed.failures} failed requests | | | | | | | | | | |")
    lines += ["", "Added latency over bare Envoy at the fixed rate:", ""]
    for c in results:
        if c.name.startswith("envoy+"):
            lines.append(f"- {c.name}: p50 {c.fixed.p50_ms - bare.fixed.p50_ms:+.3f} ms, "
                         f"p99 {c.fixed.p99_ms - bare.fixed.p99_ms:+.3f} ms")
    s = extra.get("stream", {})
    if s:
        b, t = s["bare envoy"], s["envoy+tollgate"]
        chunks = stream_events()
        lines += ["", "## Streaming", "",
                  f"Streamed chat completions, {STREAM_RATE} streams/s, the provider pacing its {chunks} "
                  f"events {STREAM_PACE_MS} ms apart:", "",
                  f"- time to first byte p50: bare {b.ttfb_p50_ms:.3f} ms, Tollgate {t.ttfb_p50_ms:.3f} ms "
                  f"(added {t.ttfb_p50_ms - b.ttfb_p50_ms:+.3f} ms)",
                  f"- whole stream p50: bare {b.p50_ms:.3f} ms, Tollgate {t.p50_ms:.3f} ms; added per chunk "
                  f"≈ {((t.p50_ms - b.p50_ms) - (t.ttfb_p50_ms - b.ttfb_p50_ms)) / chunks * 1000:+.1f} µs",
                  f"- failed streams: bare {b.failures}, Tollgate {t.failures}"]
    if "held" in extra:
        ok, failed, secs = extra["held"]
        lines.append(f"- {ok + failed} concurrent streams (50 ms between events) held through Tollgate: "
                     f"{ok} completed, {failed} failed, in {secs:.1f} s")
    if "ready" not in extra:
        return "\n".join(lines)
    lines += ["", "## Start-up and memory", "",
              f"- Envoy ready with the filter (median of 3 starts): {extra['ready']:.3f} s",
              f"- Envoy with 2 workers after {args.duration:g} s of load: RSS {extra['rss2'][0]:.1f} MiB "
              f"(peak {extra['rss2'][1]:.1f} MiB)"]
    if "soak" in extra:
        k = extra["soak"]
        per_m = 1_000_000 / max(k["requests"], 1)
        lines += [f"- Soak: {k['requests']:,} requests ({k['failures']} failed) after 50,000 of warm-up:"]
        for proc in ("envoy", "control plane"):
            growth = k["after"][proc] - k["before"][proc]
            lines.append(f"  - {proc}: RSS {k['before'][proc]:.1f} → {k['after'][proc]:.1f} MiB "
                         f"({growth * per_m:+.2f} MiB per 1M requests)")
    t = extra.get("tokenizer")
    if t:
        d, c = t["default"], t["count"]
        per_1k = (c["cpu_us"] - d["cpu_us"]) / t["prompt_tokens"] * 1000
        lines += ["", "## The tokenizer in the filter", "",
                  f"Default build {t['sizes'][0]:.2f} MB, counting build {t['sizes'][1]:.2f} MB "
                  "(tiktoken's encodings and regex engines). One Envoy worker; a "
                  f"{t['prompt_tokens']}-token prompt:", "",
                  "| build | Envoy ready s | RSS idle MiB | RSS after first count MiB | Envoy CPU µs/req | req/s |",
                  "|---|---|---|---|---|---|",
                  f"| default | {d['ready']:.3f} | {d['idle_rss']:.1f} | {d['loaded_rss']:.1f} | {d['cpu_us']:.1f} | {d['rps']:,.0f} |",
                  f"| counting (`count_prompt_tokens`) | {c['ready']:.3f} | {c['idle_rss']:.1f} | {c['loaded_rss']:.1f} | "
                  f"{c['cpu_us']:.1f} | {c['rps']:,.0f} |", "",
                  f"Counting costs ≈ {per_1k:.0f} µs of Envoy CPU per 1k prompt tokens, "
                  f"{c['ready'] - d['ready']:+.3f} s of start-up, and "
                  f"{c['idle_rss'] - d['idle_rss']:+.1f} MiB idle / {c['loaded_rss'] - d['loaded_rss']:+.1f} MiB "
                  "once loaded, for Envoy with one worker (two VMs: the main thread's and the worker's)."]
    lines += ["", "## Control plane ingest", "", "```", extra.get("ingest", ""), "```", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()

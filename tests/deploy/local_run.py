"""Runs what the rendered manifests describe on this machine: the control plane with the
ConfigMap's tollgate.toml and the sidecar's Envoy with the ConfigMap's bootstrap, each
started with its container's arguments, after rewriting only the addresses (cluster DNS
names and pod ports become free ports on 127.0.0.1)."""

from __future__ import annotations

import copy
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.harness.stack import request


def rewrite_toml(text: str, replacements: dict[str, str]) -> str:
    """`text` with each `key = value` line named in `replacements` given the new value
    (a comment after it stays); each must be there once, so a renamed field fails here
    instead of going unrewritten."""
    for line, value in replacements.items():
        key = line.split("=")[0].strip()
        pattern = re.compile(rf"^{re.escape(line)}(?=\s|$)", re.MULTILINE)
        text, count = pattern.subn(f"{key} = {value}", text)
        assert count == 1, f"{line!r} found {count} times"
    return text


def socket_address(host: str, port: int) -> dict:
    return {"socket_address": {"address": host, "port_value": port}}


def rewrite_bootstrap(bootstrap: dict, ports: dict[str, int]) -> dict:
    """The bootstrap with its addresses local: the listener and admin on the given ports,
    and each cluster's endpoints (the control plane's Service, the provider) on 127.0.0.1.
    `ports` maps "listener", "admin" and each cluster's name to a port. A TLS provider
    cluster is dialed in cleartext: the offline provider speaks no TLS."""
    local = copy.deepcopy(bootstrap)
    local["admin"]["address"] = socket_address("127.0.0.1", ports["admin"])
    (listener,) = local["static_resources"]["listeners"]
    listener["address"] = socket_address("127.0.0.1", ports["listener"])
    for cluster in local["static_resources"]["clusters"]:
        port = ports[cluster["name"]]
        for group in cluster["load_assignment"]["endpoints"]:
            for lb in group["lb_endpoints"]:
                lb["endpoint"]["address"] = socket_address("127.0.0.1", port)
                if "hostname" in lb["endpoint"]:
                    lb["endpoint"]["hostname"] = "127.0.0.1"
        cluster.pop("transport_socket", None)
    for http_filter in listener["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]:
        code = (http_filter["typed_config"].get("config", {}).get("vm_config", {}).get("code", {}))
        if "remote" in code:
            uri = code["remote"]["http_uri"]
            path = uri["uri"].split("/", 3)[3]
            uri["uri"] = f"http://127.0.0.1:{ports[uri['cluster']]}/{path}"
    return local


@dataclass
class Processes:
    """Processes started for a test, each logging to a file; stopped with SIGTERM."""

    workdir: Path
    running: list = field(default_factory=list)

    def start(self, name: str, argv: list[str], env: dict) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "ab")
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                                cwd=self.workdir, start_new_session=True)
        self.running.append((name, proc))
        return proc

    def stop(self, proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
        if proc.poll() is None:
            proc.send_signal(sig)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def stop_all(self) -> None:
        for _, proc in reversed(self.running):
            self.stop(proc)

    def dump_logs(self) -> None:
        for name, _ in self.running:
            text = (self.workdir / f"{name}.log").read_text(errors="replace")
            print(f"--- last lines of {name} ---\n" + "\n".join(text.splitlines()[-30:]),
                  file=sys.stderr)

    def check_alive(self) -> None:
        for name, proc in self.running:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}")


def wait_until(what: str, check, timeout: float = 60.0, procs: Processes | None = None):
    """Polls `check` until it returns a truthy value, which is returned."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if procs:
            procs.check_alive()
        try:
            value = check()
            if value:
                return value
        except OSError as e:
            last = e
        time.sleep(0.1)
    raise TimeoutError(f"{what} after {timeout}s ({last})")


def http_ok(url: str, expect: bytes | None = None) -> bool:
    status, _, body = request("GET", url, timeout=2)
    return status == 200 and (expect is None or expect in body)


def base_env(**extra: str) -> dict:
    """A container's environment: nothing of this process's but PATH and the logs' level."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "TOLLGATE_LOG": "info"}
    env.update(extra)
    return env

"""Two control-plane replicas on one PostgreSQL serve the same keys and usage; Envoys list
both (one health-checked cluster, as `envoy.control_plane = [...]` renders it). One
replica is killed mid-load: calls carry on through the other, and every answered call has
exactly one usage record, none lost and none doubled."""

from __future__ import annotations

import concurrent.futures
import json
import signal
import threading
import time

from tests.harness.stack import Provider, Stack, fresh_postgres_database, request

CHAT = "/v1/chat/completions"
MODEL = "gpt-4o-mini"


def chat(url: str, key: str):
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Say something short."}]}
    return request("POST", url + CHAT, body, {"authorization": f"Bearer {key}"})


def usage_ids(stack: Stack, key_id: str) -> list[str]:
    out = stack.cli("usage", "list", "--key", key_id, "--limit", "100000", "--json")
    return [json.loads(line)["request_id"] for line in out.splitlines()]


def wait_for(what: str, check, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} after {timeout}s")
        time.sleep(0.2)


def test_killing_a_replica_mid_load_loses_and_doubles_no_usage(tmp_path):
    database = fresh_postgres_database("tg_e2e_replica_failover")
    stack = Stack(workdir=tmp_path, providers=[Provider("offline", {MODEL: (0.15, 0.6, 0.075, 0.0)})],
                  database_url=database, replicas=2, envoys=2, envoys_see_all_replicas=True)
    with stack:
        keys = {name: stack.create_key(name) for name in ("load-a", "load-b")}
        answered: list[str] = []
        failed: list[tuple[int, bytes]] = []
        lock = threading.Lock()
        stop = threading.Event()

        def load(url: str, key: str) -> None:
            while not stop.is_set():
                status, headers, data = chat(url, key)
                with lock:
                    if status == 200:
                        answered.append(headers["x-tollgate-request-id"])
                    else:
                        failed.append((status, data))

        with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
            workers = [pool.submit(load, url, key) for url in stack.gateway_urls
                       for key in keys.values()]
            try:
                wait_for("calls before the kill", lambda: len(answered) >= 40)
                killed = next(p for p in stack.procs if p.name == "control-plane-1")
                killed.popen.send_signal(signal.SIGKILL)
                killed.popen.wait(timeout=10)
                stack.procs.remove(killed)
                at_kill = len(answered)
                wait_for("calls after the kill", lambda: len(answered) >= at_kill + 80)
                # A key no Envoy has seen needs Authorize, which only the survivor answers.
                # Envoy does not retry the filter's gRPC calls, so while a worker has not
                # yet learnt that the replica is gone its call to it fails: 503
                # control_plane_unavailable, which the client retries.
                fresh = stack.create_key("after-the-kill")
                refusals = []

                def served(url: str) -> bool:
                    status, _, data = chat(url, fresh)
                    if status != 200:
                        refusals.append((status, json.loads(data)["error"]["code"]))
                    return status == 200

                for url in stack.gateway_urls:
                    wait_for(f"a new key served through {url}", lambda: served(url), timeout=30)
            finally:
                stop.set()
            for w in workers:
                w.result()

        assert failed == [], failed[:3]
        assert set(refusals) <= {(503, "control_plane_unavailable")}, refusals
        key_ids = [stack.key_id(name) for name in keys]
        total = len(answered)
        wait_for("every answered call's usage record",
                 lambda: sum(len(usage_ids(stack, k)) for k in key_ids) >= total, timeout=30)
        stored = [rid for k in key_ids for rid in usage_ids(stack, k)]
        assert len(stored) == len(set(stored)), "a record stored twice"
        assert sorted(stored) == sorted(answered), "records lost or not of these calls"

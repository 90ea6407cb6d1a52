"""Hard budgets on real Envoys and control-plane replicas: the control plane leases money to
each Envoy, every call holds its worst-case cost before it is admitted, and settles to its
exact cost after, whatever its outcome."""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import time

import pytest

from tests.harness.stack import Provider, Stack, fresh_postgres_database, request

CHAT = "/v1/chat/completions"
MODEL = "gpt-4o-mini"
PRICE = (0.15, 0.6, 0.075, 0.0)
# Short leases so a test sees them reclaimed; the grace must cover the provider's deadline.
PROVIDER_TIMEOUT_MS = 2_000
BUDGETS = {"lease_ttl_ms": 1_000, "reclaim_grace_ms": 3_000, "sweep_interval_ms": 200}


def chat(url: str, key: str, max_tokens: int, headers: dict | None = None):
    body = {"model": MODEL, "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": "Say something short."}]}
    return request("POST", url + CHAT, body, {"authorization": f"Bearer {key}", **(headers or {})})


def budget_of(stack: Stack, subject: str) -> dict:
    for line in stack.cli("budgets", "list", "--json").splitlines():
        b = json.loads(line)
        if b["subject"] == subject:
            return b
    raise KeyError(subject)


def usage_rows(stack: Stack, key_id: str) -> list[dict]:
    out = stack.cli("usage", "list", "--key", key_id, "--limit", "100000", "--json")
    return [json.loads(line) for line in out.splitlines()]


def wait_for(what: str, check, timeout: float = 60.0):
    """Polls `check` until it returns a truthy value; the value, or a TimeoutError naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} after {timeout}s")
        time.sleep(0.2)


def calibrate(stack: Stack, url: str) -> tuple[int, int]:
    """(output tokens, cost in pico-dollars) of one call, made with an unbudgeted key: the
    offline provider's answers are deterministic, so every later call costs the same."""
    key = stack.create_key("calibration")
    status, headers, data = chat(url, key, 4_096)
    assert status == 200, data
    row = stack.usage(headers["x-tollgate-request-id"])
    return row["output"], row["cost_picos"]


@pytest.fixture
def cluster(tmp_path):
    """3 Envoys (2 workers each) and 2 control-plane replicas on one PostgreSQL database."""
    s = Stack(workdir=tmp_path, providers=[Provider("alpha", {MODEL: PRICE}, timeout_ms=PROVIDER_TIMEOUT_MS)],
              database_url=fresh_postgres_database("tg_e2e_budgets"), replicas=2, envoys=3,
              budgets=BUDGETS)
    s.start()
    yield s
    s.stop()


def test_200_concurrent_calls_through_3_envoys_and_2_replicas_never_pass_the_budget(cluster):
    output, cost = calibrate(cluster, cluster.gateway_urls[0])
    key = cluster.create_key("race")
    key_id = cluster.key_id("race")
    limit = 10 * cost
    # The CLI takes dollars; 10 calls' cost is written exactly (pico-dollars → 12 decimals).
    cluster.cli("budgets", "set", "--key", key_id, "--period", "total",
                "--usd", f"{limit // 10**12}.{limit % 10**12:012d}")

    urls = cluster.gateway_urls
    with concurrent.futures.ThreadPoolExecutor(max_workers=100) as pool:
        answers = list(pool.map(lambda i: chat(urls[i % 3], key, output), range(200)))

    statuses = [status for status, _, _ in answers]
    admitted = [h["x-tollgate-request-id"] for s, h, _ in answers if s == 200]
    assert len(admitted) >= 1, statuses
    assert set(statuses) <= {200, 429}, statuses
    for status, _, data in answers:
        if status == 429:
            error = json.loads(data)["error"]
            assert (error["type"], error["code"]) == ("insufficient_quota", "insufficient_quota"), error

    # Every admitted call is recorded, and what they cost stays within the budget.
    rows = wait_for("every admitted call recorded",
                    lambda: r if len(r := usage_rows(cluster, key_id)) >= len(admitted) else None)
    assert sorted(r["request_id"] for r in rows) == sorted(admitted)
    spent = sum(r["cost_picos"] for r in rows)
    assert spent <= limit, (spent, limit)
    assert all(r["cost_picos"] == cost for r in rows), "each call costs what the calibration did"

    # Once every lease is reclaimed, what is left is the limit less what was recorded.
    final = wait_for("leases reclaimed", lambda: b if (b := budget_of(cluster, f"key:{key_id}"))["leased_picos"] == 0 else None)
    assert final["spent_picos"] == spent
    assert final["available_picos"] == limit - spent


def test_a_failed_call_gives_its_hold_back(cluster):
    output, cost = calibrate(cluster, cluster.gateway_urls[0])
    key = cluster.create_key("fails-once")
    key_id = cluster.key_id("fails-once")
    # Room for one call's hold and not two.
    cluster.cli("budgets", "set", "--key", key_id, "--period", "day", "--usd", f"0.{cost * 3 // 2:012d}")
    url = cluster.gateway_urls[1]
    status, _, data = chat(url, key, output, {"x-offline-fault": "status=500"})
    assert status == 500, data
    status, _, data = chat(url, key, output)
    assert status == 200, data
    status, _, data = chat(url, key, output)
    assert status == 429, data
    assert json.loads(data)["error"]["code"] == "insufficient_quota"


def test_a_killed_envoys_lease_returns_to_the_budget(cluster):
    output, cost = calibrate(cluster, cluster.gateway_urls[0])
    key = cluster.create_key("killed")
    key_id = cluster.key_id("killed")
    cluster.cli("budgets", "set", "--key", key_id, "--period", "month", "--usd", f"0.{cost * 100:012d}")
    subject = f"key:{key_id}"

    # A call on the third Envoy takes a lease; once its usage is stored, the Envoy dies
    # holding the rest of the lease, which it never returns.
    status, headers, data = chat(cluster.gateway_urls[2], key, output)
    assert status == 200, data
    cluster.usage(headers["x-tollgate-request-id"])
    leased = budget_of(cluster, subject)
    assert leased["leased_picos"] > 0, leased
    os.killpg(os.getpgid(cluster.pid("envoy-2")), signal.SIGKILL)

    final = wait_for("the dead Envoy's lease reclaimed",
                     lambda: b if (b := budget_of(cluster, subject))["leased_picos"] == 0 else None)
    assert final["spent_picos"] == cost
    assert final["available_picos"] == cost * 100 - cost

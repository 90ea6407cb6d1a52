"""Usage reporting under pressure, and the ids usage is stored under."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import PRICES
from tests.harness.stack import Provider, Stack, request

CHAT = "/v1/chat/completions"
# Several messages, each under the filter's 256 KiB estimate cut, ~300 KB in all: every
# record then carries ~250 KB of prompt text for the control plane to count.
BIG_PROMPT = [{"role": "user", "content": f"part {i}: " + "tollgate meters every token " * 1800}
              for i in range(6)]


@pytest.fixture
def own_stack(tmp_path):
    # Its own stack: a jammed outbox must not disturb the other tests' usage rows.
    s = Stack(workdir=tmp_path, providers=[Provider("alpha", {"gpt-4o-mini": PRICES["gpt-4o-mini"]})])
    s.start()
    yield s
    s.stop()


def call(stack, key, messages, headers=None, stream=False):
    body = {"model": "gpt-4o-mini", "messages": messages, "stream": stream}
    status, resp_headers, _ = request("POST", stack.gateway_url + CHAT, body,
                                      {"authorization": f"Bearer {key}", **(headers or {})},
                                      timeout=120)
    return status, resp_headers.get("x-tollgate-request-id")


def stored_ids(stack) -> set[str]:
    out = stack.cli("usage", "list", "--limit", "100000", "--json")
    return {json.loads(line)["request_id"] for line in out.splitlines() if line.strip()}


def test_burst_of_large_estimates_leaves_reporting_working(own_stack):
    s = own_stack
    key = s.create_key("burst")

    def big_call(_):
        return call(s, key, BIG_PROMPT, headers={"x-offline-fault": "no-usage"}, stream=True)

    with ThreadPoolExecutor(8) as pool:
        big = list(pool.map(big_call, range(60)))

    # Ordinary calls after the burst, on both workers: the burst's key, and new keys that
    # need an Authorize call while the burst's usage is still being counted.
    later = []
    for i in range(15):
        k = key if i % 3 == 0 else s.create_key(f"after-burst-{i}")
        later.append(call(s, k, [{"role": "user", "content": f"ordinary call {i}"}]))

    answered = [rid for status, rid in big + later if status == 200]
    deadline = time.monotonic() + 180
    while True:
        missing = set(answered) - stored_ids(s)
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    later_recorded = sum(1 for status, rid in later if status == 200 and rid not in missing)
    summary = (f"burst: {sum(st == 200 for st, _ in big)} of 60 answered 200; "
               f"later: {sum(st == 200 for st, _ in later)} of 15 answered 200, "
               f"{later_recorded} of 15 recorded; {len(answered) - len(missing)} of 75 recorded")
    print(summary)
    assert [status for status, _ in big + later] == [200] * 75, summary
    assert not missing, summary


def test_request_ids_show_no_counter(stack):
    # Refused calls carry ids too, and cost no provider or control-plane call.
    ids = []
    for _ in range(300):
        status, headers, _ = request("POST", stack.gateway_url + CHAT, {"model": "gpt-4o-mini"})
        assert status == 401
        ids.append(headers["x-tollgate-request-id"])
    assert all(len(i) == 32 and all(c in "0123456789abcdef" for c in i) for i in ids), ids[:3]
    assert len(set(ids)) == len(ids)
    # Prefix + counter ids share their first half within a worker, their last half across
    # workers, and sit next to each other as numbers.
    assert len({i[:16] for i in ids}) == len(ids), "ids share a prefix"
    assert len({i[16:] for i in ids}) == len(ids), "ids share a suffix"
    numbers = sorted(int(i, 16) for i in ids)
    closest = min(b - a for a, b in zip(numbers, numbers[1:]))
    assert closest > 2 ** 64, f"two ids are {closest} apart"

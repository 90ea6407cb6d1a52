"""Requests per minute per key on a real Envoy with 2 workers: exact across the workers,
answered with OpenAI's 429 and x-ratelimit headers."""

from __future__ import annotations

import concurrent.futures
import json
import re

from tests.harness.stack import Provider, Stack, request

CHAT = "/v1/chat/completions"
# OpenAI writes resets as Go durations: `20ms`, `1s`, `59.5s`, `1m1s`.
DURATION = re.compile(r"^(\d+ms|(\d+m)?\d+(\.\d+)?s)$")
RATE_HEADERS = ("x-ratelimit-limit-requests", "x-ratelimit-remaining-requests",
                "x-ratelimit-reset-requests")


def chat(stack, key, headers=None):
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    return request("POST", stack.gateway_url + CHAT, body,
                   {"authorization": f"Bearer {key}", **(headers or {})})


def test_100_concurrent_calls_on_a_10_rpm_key_admit_exactly_10(stack):
    assert stack.envoy_concurrency == 2
    key = stack.create_key("e2e-rpm-10", rpm=10)
    with concurrent.futures.ThreadPoolExecutor(max_workers=50) as pool:
        answers = list(pool.map(lambda _: chat(stack, key), range(100)))
    statuses = [status for status, _, _ in answers]
    assert statuses.count(200) == 10, statuses
    assert statuses.count(429) == 90, statuses

    remaining = sorted(int(h["x-ratelimit-remaining-requests"]) for s, h, _ in answers if s == 200)
    assert remaining == list(range(10)), "each admit took one request"
    for status, headers, data in answers:
        assert headers["x-ratelimit-limit-requests"] == "10"
        assert DURATION.match(headers["x-ratelimit-reset-requests"]), headers
        if status == 429:
            assert headers["x-ratelimit-remaining-requests"] == "0"
            # The window frees its first request within 61 s; the header is whole seconds.
            assert 1 <= int(headers["retry-after"]) <= 61, headers["retry-after"]
            error = json.loads(data)["error"]
            assert error["type"] == "requests"
            assert error["code"] == "rate_limit_exceeded"
            assert error["message"].startswith("Rate limit reached"), error["message"]
            assert "Limit 10" in error["message"], error["message"]
        else:
            assert "retry-after" not in headers


def test_the_gateways_headers_replace_the_providers_for_a_limited_key(stack):
    key = stack.create_key("e2e-rpm-headers", rpm=3)
    status, headers, data = chat(stack, key, {"x-offline-fault": "account-headers"})
    assert status == 200, data
    # The offline provider says 9999 remaining for the operator's account.
    assert headers["x-ratelimit-remaining-requests"] == "2"
    assert headers["x-ratelimit-limit-requests"] == "3"


def test_a_key_with_rpm_0_is_blocked_and_one_without_is_unlimited(stack):
    blocked = stack.create_key("e2e-rpm-0", rpm=0)
    status, headers, data = chat(stack, blocked)
    assert status == 429, data
    assert json.loads(data)["error"]["code"] == "rate_limit_exceeded"
    assert headers["x-ratelimit-limit-requests"] == "0"
    assert "retry-after" in headers

    free = stack.create_key("e2e-rpm-unset")
    with concurrent.futures.ThreadPoolExecutor(max_workers=10) as pool:
        answers = list(pool.map(lambda _: chat(stack, free), range(30)))
    assert [s for s, _, _ in answers] == [200] * 30
    assert all(not any(n in h for n in RATE_HEADERS) for _, h, _ in answers)


def test_the_configs_default_applies_to_keys_without_their_own(tmp_path):
    s = Stack(workdir=tmp_path, providers=[Provider("alpha", {"gpt-4o-mini": (0.15, 0.6, 0, 0)})],
              limits={"requests_per_minute": 2})
    s.start()
    try:
        default = s.create_key("default-2")
        own = s.create_key("own-4", rpm=4)
        assert [chat(s, default)[0] for _ in range(3)] == [200, 200, 429]
        assert [chat(s, own)[0] for _ in range(5)] == [200, 200, 200, 200, 429]
    finally:
        s.stop()

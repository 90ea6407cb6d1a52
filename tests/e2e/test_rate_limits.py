"""Requests and tokens per minute per key on a real Envoy with 2 workers: exact across the
workers, answered with OpenAI's 429 and x-ratelimit headers; and the failed-authentication
brake per client address."""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import re
import time

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


def test_a_key_whose_share_lapsed_while_the_control_plane_was_down_gets_the_rest_of_its_limit(
        tmp_path):
    # Shares live 1 s, so the lease lapses soon after the control plane stops answering.
    s = Stack(workdir=tmp_path, providers=[Provider("alpha", {"gpt-4o-mini": (0.15, 0.6, 0, 0)})],
              limits={"share_ttl_ms": 1000})
    s.start()
    try:
        key = s.create_key("lapsed-10", rpm=10)
        assert [chat(s, key)[0] for _ in range(6)] == [200] * 6
        s.stop_control_plane()
        time.sleep(3)
        s.start_control_plane()
        # The 6 are still in the window and still in the lapsed lease's share: the 4 left
        # of the minute are admitted now, not once that lease is reclaimed a minute later.
        answers = [chat(s, key) for _ in range(5)]
        assert [status for status, _, _ in answers] == [200] * 4 + [429], answers[-1]
    finally:
        s.stop()

# ---- tokens per minute ----------------------------------------------------------------

TOKEN_HEADERS = ("x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens",
                 "x-ratelimit-reset-tokens")


def chat_tokens(stack, key, max_tokens, headers=None):
    body = {"model": "gpt-4o-mini", "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": "hi"}]}
    return request("POST", stack.gateway_url + CHAT, body,
                   {"authorization": f"Bearer {key}", **(headers or {})})


def test_a_tpm_limit_admits_within_one_requests_size_across_2_workers(tmp_path):
    limit = 2000
    s = Stack(workdir=tmp_path, providers=[Provider("alpha", {"gpt-4o-mini": (0.15, 0.6, 0, 0)})],
              limits={"tokens_per_minute": limit})
    s.start()
    try:
        assert s.envoy_concurrency == 2
        # One call on a key of its own tells what a call of this shape holds: its prompt's
        # bound and its 100 output tokens.
        status, headers, data = chat_tokens(s, s.create_key("tpm-probe"), 100)
        assert status == 200, data
        hold = limit - int(headers["x-ratelimit-remaining-tokens"])
        assert 100 < hold < 200, hold

        # 40 calls at once; the provider answers each after 2 s, so every admission is
        # decided while all admitted calls still hold their whole hold.
        key = s.create_key("tpm-burst")
        slow = {"x-offline-fault": "delay=2000"}
        with concurrent.futures.ThreadPoolExecutor(max_workers=40) as pool:
            answers = list(pool.map(lambda _: chat_tokens(s, key, 100, slow), range(40)))
        admitted = [a for a in answers if a[0] == 200]
        refused = [a for a in answers if a[0] != 200]
        assert len(admitted) == limit // hold, [a[0] for a in answers]
        assert all(status == 429 for status, _, _ in refused), [a[0] for a in refused]

        # Each admitted answer says what was left after its own hold.
        remaining = sorted(int(h["x-ratelimit-remaining-tokens"]) for _, h, _ in admitted)
        assert remaining == [limit - i * hold for i in range(len(admitted), 0, -1)]
        for _, headers, _ in answers:
            assert headers["x-ratelimit-limit-tokens"] == str(limit)
            assert DURATION.match(headers["x-ratelimit-reset-tokens"]), headers
            assert "x-ratelimit-limit-requests" not in headers, "no requests limit here"
        left = limit - len(admitted) * hold
        assert 0 <= left < hold
        for _, headers, data in refused:
            assert headers["x-ratelimit-remaining-tokens"] == str(left)
            assert 1 <= int(headers["retry-after"]) <= 61, headers["retry-after"]
            error = json.loads(data)["error"]
            assert (error["type"], error["code"]) == ("tokens", "rate_limit_exceeded")
            assert f"Limit {limit}, Requested {hold}" in error["message"], error["message"]

        # Once every admitted call is recorded (each settles before it is reported), the
        # window holds what they used, not what they held.
        used = sum(json.loads(data)["usage"]["total_tokens"] for _, _, data in admitted)
        for _, headers, _ in admitted:
            s.usage(headers["x-tollgate-request-id"])
        status, headers, data = chat_tokens(s, key, 100)
        assert status == 200, data
        assert int(headers["x-ratelimit-remaining-tokens"]) == limit - used - hold
    finally:
        s.stop()


def test_a_call_larger_than_the_tpm_limit_is_refused_with_its_size(tmp_path):
    s = Stack(workdir=tmp_path, providers=[Provider("alpha", {"gpt-4o-mini": (0.15, 0.6, 0, 0)})],
              limits={"tokens_per_minute": 50, "requests_per_minute": 5})
    s.start()
    try:
        key = s.create_key("tpm-small")
        status, headers, data = chat_tokens(s, key, 1000)
        assert status == 429, data
        error = json.loads(data)["error"]
        assert error["type"] == "tokens"
        assert error["message"].startswith("Request too large"), error["message"]
        # The refused call took no request: the next one sees all 5 but its own.
        assert headers["x-ratelimit-remaining-requests"] == "5"
        status, headers, data = chat_tokens(s, key, 5)
        assert status == 200, data
        assert headers["x-ratelimit-remaining-requests"] == "4"
        assert int(headers["x-ratelimit-remaining-tokens"]) < 50
    finally:
        s.stop()


# ---- the failed-authentication brake --------------------------------------------------

def chat_from(stack, source_ip, key):
    """A chat call sent from `source_ip` (any 127.x address reaches the loopback)."""
    conn = http.client.HTTPConnection("127.0.0.1", stack.gateway_port, timeout=30,
                                      source_address=(source_ip, 0))
    body = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
    headers = {"content-type": "application/json"}
    if key is not None:
        headers["authorization"] = f"Bearer {key}"
    try:
        conn.request("POST", CHAT, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def test_an_address_past_its_failed_authentications_is_refused_whatever_its_key(tmp_path):
    s = Stack(workdir=tmp_path, providers=[Provider("alpha", {"gpt-4o-mini": (0.15, 0.6, 0, 0)})],
              limits={"failed_auths_per_minute_per_ip": 3})
    s.start()
    try:
        good = s.create_key("brake-good")
        attacker = "127.0.0.2"
        failures = [chat_from(s, attacker, k)[0] for k in ("tg-guess-1", None, "tg-guess-2")]
        assert failures == [401, 401, 401]
        for key in (good, "tg-guess-3"):
            status, headers, data = chat_from(s, attacker, key)
            assert status == 429, data
            assert json.loads(data)["error"]["code"] == "rate_limit_exceeded"
            assert 1 <= int(headers["retry-after"]) <= 61, headers
        # Another address is not braked.
        status, _, data = chat_from(s, "127.0.0.1", good)
        assert status == 200, data
    finally:
        s.stop()


def test_a_users_limit_is_shared_by_all_their_keys(stack):
    stack.cli("users", "limit", "e2e-carol", "--rpm", "3")
    first = stack.create_key("e2e-carol-1", user="e2e-carol")
    second = stack.create_key("e2e-carol-2", user="e2e-carol")
    other = stack.create_key("e2e-dave-1", user="e2e-dave")
    statuses = [chat(stack, key)[0] for key in (first, second, first, second)]
    assert statuses == [200, 200, 200, 429], statuses
    status, headers, data = chat(stack, second)
    assert status == 429
    assert "user `e2e-carol`" in json.loads(data)["error"]["message"]
    assert headers["x-ratelimit-limit-requests"] == "3"
    assert chat(stack, other)[0] == 200, "another user's keys are not limited"


def test_a_per_model_limit_applies_to_its_model_only(stack):
    key = stack.create_key("e2e-model-limit")
    stack.cli("keys", "update", stack.key_id("e2e-model-limit"), "--model-limit", "gpt-4o-mini:2:none")
    assert [chat(stack, key)[0] for _ in range(3)] == [200, 200, 429]
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    status, _, data = request("POST", stack.gateway_url + CHAT, body, {"authorization": f"Bearer {key}"})
    assert status == 200, data


def test_a_batched_completion_holds_every_prompts_choices(tmp_path):
    # The provider answers each of the 3 prompts twice, up to 100 tokens each: 600 output
    # tokens at most, where one prompt's call holds 100.
    limit = 1_000_000
    s = Stack(workdir=tmp_path,
              providers=[Provider("alpha", {"gpt-3.5-turbo-instruct": (1.5, 2.0, 0, 0)})],
              limits={"tokens_per_minute": limit})
    s.start()
    try:
        def held(prompt, n):
            body = {"model": "gpt-3.5-turbo-instruct", "prompt": prompt, "max_tokens": 100,
                    "n": n, "stream": True}
            key = s.create_key(f"batch-{len(prompt)}-{n}")
            status, headers, data = request("POST", s.gateway_url + "/v1/completions", body,
                                            {"authorization": f"Bearer {key}"})
            assert status == 200, data
            return limit - int(headers["x-ratelimit-remaining-tokens"])

        assert 100 <= held("a", 1) < 150
        assert 600 <= held(["a", "b", "c"], 2) < 650
    finally:
        s.stop()

"""Hard budgets on a real Envoy with 2 workers and the control plane's leases: the first call
waits for a lease and still reaches its provider whole, a spent budget is OpenAI's billing
429, concurrent calls never spend past the budget, and a stream that overruns its hold is
cut with an error event the openai client raises."""

from __future__ import annotations

import concurrent.futures
import json
import time

import openai
import pytest

from conftest import provider_saw
from tests.harness.stack import request

CHAT = "/v1/chat/completions"


def budgeted_key(stack, name: str, usd: str, period: str = "total", team: str | None = None):
    """A new key with a budget of its own of `usd` dollars; returns (key, key id)."""
    args = ["keys", "create", "--name", name, "--quiet"]
    if team:
        args += ["--team", team]
    key = stack.cli(*args).strip()
    key_id = stack.key_id(name)
    stack.cli("budgets", "set", "--key", key_id, "--period", period, "--usd", usd)
    return key, key_id


def budget_of(stack, subject: str) -> dict:
    for line in stack.cli("budgets", "list", "--json").splitlines():
        b = json.loads(line)
        if b["subject"] == subject:
            return b
    raise KeyError(subject)


def chat_body(max_tokens: int, **extra) -> bytes:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi budget"}],
            "max_tokens": max_tokens, **extra}
    return json.dumps(body).encode()


def post(stack, key: str, body: bytes, headers: dict | None = None):
    return request("POST", stack.gateway_url + CHAT, body,
                   {"authorization": f"Bearer {key}", "content-type": "application/json",
                    **(headers or {})})


def spent_settles_to(stack, subject: str, total: int, timeout: float = 10.0) -> dict:
    """The budget once the control plane has recorded `total` pico-dollars of spend."""
    deadline = time.monotonic() + timeout
    while True:
        b = budget_of(stack, subject)
        if b["spent_picos"] == total or time.monotonic() > deadline:
            return b
        time.sleep(0.1)


def test_the_first_call_waits_for_a_lease_and_its_body_reaches_the_provider_whole(stack):
    key, key_id = budgeted_key(stack, "e2e-budget-first", "1", team="e2e-ml")
    body = chat_body(50)
    status, headers, data = post(stack, key, body)
    assert status == 200, data
    rid = headers["x-tollgate-request-id"]
    seen = provider_saw(stack, "alpha", rid)
    # A budgeted body goes on as the gateway read it, re-written whole.
    assert seen["body"] == json.loads(body), "the body paused for the lease went on whole"
    assert seen["model"] == "gpt-4o-mini"
    row = stack.usage(rid)
    assert (row["user"], row["team"]) == (None, "e2e-ml"), row
    b = spent_settles_to(stack, f"key:{key_id}", row["cost_picos"])
    assert b["spent_picos"] == row["cost_picos"] > 0, b
    # A streamed call, rewritten for `include_usage`, waits the same way when its lease
    # runs short: the next call's body still arrives whole.
    streamed = chat_body(50, stream=True)
    status, headers, data = post(stack, key, streamed)
    assert status == 200, data
    assert b"data: [DONE]" in data
    seen = provider_saw(stack, "alpha", headers["x-tollgate-request-id"])
    assert seen["body"] == {**json.loads(streamed), "stream_options": {"include_usage": True}}


def test_a_spent_budget_is_openais_billing_429_and_the_client_is_told_not_to_retry(stack):
    key, key_id = budgeted_key(stack, "e2e-budget-spent", "0.000001")
    # 50 output tokens at $0.60 per million hold $0.00003, more than the whole budget.
    status, headers, data = post(stack, key, chat_body(50))
    assert status == 429, data
    error = json.loads(data)["error"]
    assert error["type"] == "insufficient_quota"
    assert error["code"] == "insufficient_quota"
    assert f"total budget of key:{key_id}" in error["message"], error["message"]
    assert headers["x-should-retry"] == "false"

    client = openai.OpenAI(base_url=stack.gateway_url + "/v1", api_key=key, timeout=30)
    with pytest.raises(openai.RateLimitError) as raised:
        client.chat.completions.create(model="gpt-4o-mini", max_tokens=50,
                                       messages=[{"role": "user", "content": "hi"}])
    assert raised.value.code == "insufficient_quota"
    assert budget_of(stack, f"key:{key_id}")["spent_picos"] == 0


def test_concurrent_calls_never_spend_past_the_budget(stack):
    # gpt-4o ($2.50 in, $10 out per million tokens): a hold is at most the whole body's bytes
    # as prompt tokens plus the 100 output tokens asked for. The budget affords that many
    # holds at once, so at least that many calls pass even when none settles before the rest
    # arrive; how many more pass as holds settle to the calls' real cost is up to timing.
    key, key_id = budgeted_key(stack, "e2e-budget-race", "0.01")
    body = json.dumps({"model": "gpt-4o", "max_tokens": 100,
                       "messages": [{"role": "user", "content": "race"}]}).encode()
    most_a_hold_can_be = len(body) * 2.50e-6 + 100 * 10e-6
    affordable_at_once = int(0.01 // most_a_hold_can_be)
    assert affordable_at_once >= 8, "the body grew: the test no longer races enough calls"
    with concurrent.futures.ThreadPoolExecutor(max_workers=40) as pool:
        answers = list(pool.map(lambda _: post(stack, key, body), range(120)))
    statuses = [s for s, _, _ in answers]
    assert set(statuses) <= {200, 429}, statuses
    assert statuses.count(200) >= affordable_at_once, statuses
    assert statuses.count(429) > 0, "the budget never ran out"
    for status, _, data in answers:
        if status == 429:
            assert json.loads(data)["error"]["code"] == "insufficient_quota"
    rows = [stack.usage(h["x-tollgate-request-id"]) for s, h, _ in answers if s == 200]
    recorded = sum(r["cost_picos"] for r in rows)
    b = spent_settles_to(stack, f"key:{key_id}", recorded)
    assert b["spent_picos"] == recorded, b
    assert recorded <= b["limit_picos"], (recorded, b)
    assert b["spent_picos"] + b["leased_picos"] <= b["limit_picos"], b


def test_a_stream_past_its_hold_is_cut_with_an_error_event_the_openai_client_raises(stack):
    key, key_id = budgeted_key(stack, "e2e-budget-cut", "1")
    client = openai.OpenAI(base_url=stack.gateway_url + "/v1", api_key=key, max_retries=0, timeout=30)
    # The offline provider ignores `max_tokens`: its answer runs past the 2 tokens held.
    # Paced, so its words arrive in chunks of their own.
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", stream=True, max_tokens=2,
        messages=[{"role": "user", "content": "a long answer please"}],
        extra_headers={"x-offline-fault": "slow=5"})
    rid = raw.headers["x-tollgate-request-id"]
    received = []
    with pytest.raises(openai.APIError) as raised:
        for chunk in raw.parse():
            received.extend(c.delta.content or "" for c in chunk.choices)
    assert "insufficient_quota" in str(raised.value.body or raised.value), raised.value
    # The two words held went through; the third was replaced by the error.
    assert "".join(received) == "Hello from ", received
    row = stack.usage(rid)
    assert row["partial"], row
    b = spent_settles_to(stack, f"key:{key_id}", row["cost_picos"])
    assert b["spent_picos"] == row["cost_picos"] > 0


@pytest.mark.parametrize("fault", ["", "no-usage"])
def test_a_stream_without_include_usage_is_charged_to_its_budget(stack, fault):
    """The client asks for no usage chunk (the gateway adds one); with `no-usage` the
    provider reports none at all and the control plane counts the text: charged either way."""
    key, key_id = budgeted_key(stack, f"e2e-budget-stream-{fault or 'usage'}", "1")
    conn_body = chat_body(50, stream=True)
    status, headers, data = post(stack, key, conn_body, {"x-offline-fault": fault} if fault else None)
    assert status == 200, data
    assert b'"usage"' not in data or b'"usage":null' in data, "the client did not ask for usage"
    row = stack.usage(headers["x-tollgate-request-id"])
    assert row["output"] > 0 and row["cost_picos"] > 0, row
    assert row["estimated"] == bool(fault), row
    b = spent_settles_to(stack, f"key:{key_id}", row["cost_picos"])
    assert b["spent_picos"] == row["cost_picos"], b

def test_a_burst_of_calls_on_a_cold_envoy_leases_one_share_not_the_budget(stack):
    # gpt-4o-mini, 50 output tokens: a hold of a few hundred-thousandths of a dollar; a
    # share (a twentieth of $1) affords over a thousand. Forty calls at once found no lease:
    # each leased a share, the whole budget went to this Envoy, and each spare share sat
    # leased for TTL + grace (eleven minutes), refusing every other Envoy.
    key, key_id = budgeted_key(stack, "e2e-budget-burst", "1")
    with concurrent.futures.ThreadPoolExecutor(max_workers=40) as pool:
        answers = list(pool.map(lambda _: post(stack, key, chat_body(50)), range(40)))
    assert [s for s, _, _ in answers] == [200] * 40
    rows = [stack.usage(h["x-tollgate-request-id"]) for _, h, _ in answers]
    b = spent_settles_to(stack, f"key:{key_id}", sum(r["cost_picos"] for r in rows))
    assert b["spent_picos"] == sum(r["cost_picos"] for r in rows), b
    # One share stays leased to the Envoy (two, with a renewal ahead of need); the calls'
    # own leases closed with their records.
    assert b["leased_picos"] <= 2 * b["limit_picos"] // 20, b

def test_a_budgeted_call_asks_its_provider_for_no_more_output_than_it_held(stack):
    # The hold caps the output at the model's maximum (16,384 in this stack); a provider
    # told more, or nothing, could bill past the hold in a buffered answer never cut.
    key, _ = budgeted_key(stack, "e2e-budget-cap", "1")
    cases = [(chat_body(1_000_000), "max_tokens"),
             (json.dumps({"model": "gpt-4o-mini",
                          "messages": [{"role": "user", "content": "hi"}]}).encode(),
              "max_completion_tokens")]
    for body, field in cases:
        status, headers, data = post(stack, key, body)
        assert status == 200, data
        seen = provider_saw(stack, "alpha", headers["x-tollgate-request-id"])
        assert seen["body"][field] == 16_384, seen["body"]
    # A key without a budget is passed through untouched.
    plain = stack.cli("keys", "create", "--name", "e2e-budget-cap-none", "--quiet").strip()
    status, headers, data = post(stack, plain, chat_body(1_000_000))
    assert status == 200, data
    seen = provider_saw(stack, "alpha", headers["x-tollgate-request-id"])
    assert seen["body"]["max_tokens"] == 1_000_000


def test_a_budgeted_call_may_not_name_input_stored_at_its_provider(stack):
    key, _ = budgeted_key(stack, "e2e-budget-stored", "1")
    body = json.dumps({"model": "gpt-4o-mini", "input": "and then?",
                       "previous_response_id": "resp_123"}).encode()
    status, _, data = request("POST", stack.gateway_url + "/v1/responses", body,
                              {"authorization": f"Bearer {key}",
                               "content-type": "application/json"})
    assert status == 400, data
    error = json.loads(data)["error"]
    assert (error["code"], error["param"]) == ("unmetered_option", "previous_response_id"), error
    b = budget_of(stack, f"key:{stack.key_id('e2e-budget-stored')}")
    assert b["spent_picos"] == 0, b


def test_a_budgeted_body_ending_in_trailers_waits_for_its_lease_and_goes_on_capped(stack):
    # A new key: its grant is not cached and its budget has no lease, so the body is
    # checked at the trailers, waits there for the lease, and is replayed re-written.
    from test_meter import h2_post

    key, _ = budgeted_key(stack, "e2e-budget-trailers", "1")
    text = "a body that must arrive whole " * 500
    body = json.dumps({"model": "gpt-4o-mini", "max_tokens": 1_000_000,
                       "messages": [{"role": "user", "content": text}]}).encode()
    status, headers, data = h2_post(stack.gateway_port, CHAT,
                                    {"authorization": f"Bearer {key}",
                                     "content-type": "application/json"},
                                    body, {"x-trailer": "1"})
    assert status == 200, data[:300]
    seen = provider_saw(stack, "alpha", headers["x-tollgate-request-id"])
    assert seen["body"]["messages"][0]["content"] == text
    assert seen["body"]["max_tokens"] == 16_384

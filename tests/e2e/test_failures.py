"""What clients see and what is metered when providers fail or calls end early."""

from __future__ import annotations

import http.client
import json
import time

import openai
import pytest

from conftest import SLOW_TIMEOUT_MS
from tests.harness.stack import read_stream, request

CHAT = "/v1/chat/completions"


def chat(stack, key, model="gpt-4o-mini", headers=None, **extra):
    body = {"model": model, "messages": [{"role": "user", "content": "tell me a long story"}], **extra}
    return request("POST", stack.gateway_url + CHAT, body, {"authorization": f"Bearer {key}", **(headers or {})})


def error_of(data: bytes) -> dict:
    body = json.loads(data)
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    return body["error"]


def test_provider_timeout_is_504(stack, key):
    started = time.monotonic()
    status, headers, data = chat(stack, key, model="slow-model",
                                 headers={"x-offline-fault": f"delay={SLOW_TIMEOUT_MS * 3}"})
    assert status == 504
    assert error_of(data)["code"] == "provider_timeout"
    assert time.monotonic() - started < SLOW_TIMEOUT_MS * 3 / 1000, "the provider's own timeout applied"
    row = stack.usage(headers["x-tollgate-request-id"])
    assert row["status"] == 504 and row["output"] == 0 and row["cost_picos"] == 0


def test_stream_past_the_deadline_is_cut_and_recorded_partial(stack, key):
    conn = http.client.HTTPConnection(f"127.0.0.1:{stack.gateway_port}", timeout=10)
    body = json.dumps({"model": "slow-model", "stream": True,
                       "messages": [{"role": "user", "content": "a story that outlasts the deadline"}]})
    conn.request("POST", CHAT, body=body, headers={"authorization": f"Bearer {key}",
                                                  "content-type": "application/json",
                                                  "x-offline-fault": f"slow={SLOW_TIMEOUT_MS // 5}"})
    resp = conn.getresponse()
    assert resp.status == 200
    received = b""
    try:
        while chunk := resp.read1(4096):
            received += chunk
    except (http.client.HTTPException, ValueError, OSError):
        pass
    conn.close()
    assert b"[DONE]" not in received and b"data: " in received
    row = stack.usage(resp.getheader("x-tollgate-request-id"))
    assert row["partial"] and row["output"] > 0


def test_unreachable_provider_is_502(stack, key):
    status, _, data = chat(stack, key, model="ghost-model")
    assert status == 502
    assert error_of(data)["code"] == "provider_unreachable"


def test_reset_before_headers_is_502(stack, key):
    status, _, data = chat(stack, key, headers={"x-offline-fault": "drop"})
    assert status == 502
    assert error_of(data)["code"] == "provider_unreachable"


def stream_until_cut(stack, key, fault: str, stop_after: bytes | None = None):
    """Streams a chat; returns (status, request id, bytes received) when the stream is cut
    by the server, or when `stop_after` has been seen (the client then hangs up)."""
    conn = http.client.HTTPConnection(f"127.0.0.1:{stack.gateway_port}", timeout=10)
    body = json.dumps({"model": "gpt-4o-mini", "stream": True,
                       "messages": [{"role": "user", "content": "a slow story please"}]})
    conn.request("POST", CHAT, body=body, headers={"authorization": f"Bearer {key}",
                                                  "content-type": "application/json",
                                                  "x-offline-fault": fault})
    resp = conn.getresponse()
    request_id = resp.getheader("x-tollgate-request-id")
    received = read_stream(conn, resp, stop_after)
    return resp.status, request_id, received


@pytest.mark.parametrize("model,provider_type", [
    ("claude-sonnet", "overloaded_error"),
    ("gemini-2.5-flash", "invalid_request_error"),
])
def test_provider_errors_reach_the_client_in_openai_shape(stack, key, model, provider_type):
    status = 529 if model == "claude-sonnet" else 400
    code, _, data = chat(stack, key, model=model, headers={"x-offline-fault": f"status={status}"})
    assert code == status
    err = error_of(data)
    assert err["type"] == provider_type
    assert "Offline provider fault" in err["message"]


@pytest.mark.parametrize("model", ["gpt-4o-mini", "claude-sonnet", "gemini-2.5-flash"])
@pytest.mark.parametrize("status", [401, 403])
def test_provider_auth_refusals_reach_the_client_as_the_gateways_message(stack, key, model, status):
    # The provider's own words may quote the operator's key (OpenAI's "sk-...abcd").
    code, _, data = chat(stack, key, model=model, headers={"x-offline-fault": f"status={status}"})
    assert code == status
    err = error_of(data)
    assert err["code"] == "provider_auth_failed"
    assert "Offline provider fault" not in err["message"]
    assert "gateway's credential" in err["message"]


def test_upstream_reset_mid_stream_records_partial_usage(stack, key):
    status, request_id, data = stream_until_cut(stack, key, "reset-after=6")
    assert status == 200
    assert b"[DONE]" not in data and b"Hello" in data
    row = stack.usage(request_id)
    assert row["partial"], row
    assert row["estimated"], "no usage chunk arrived, so the tokens seen were counted"
    assert row["output"] > 0 and row["input_uncached"] > 0


def test_client_disconnect_mid_stream_records_partial_usage(stack, key):
    status, request_id, data = stream_until_cut(stack, key, "slow=100", stop_after=b'"content":"from ')
    assert status == 200 and b"[DONE]" not in data
    row = stack.usage(request_id, timeout=15)
    assert row["partial"] and row["estimated"]
    assert row["output"] > 0 and row["input_uncached"] > 0


def test_missing_usage_is_estimated_with_the_tokenizer(stack, key):
    status, headers, data = chat(stack, key, headers={"x-offline-fault": "no-usage"})
    assert status == 200 and "usage" not in json.loads(data)
    row = stack.usage(headers["x-tollgate-request-id"])
    assert row["estimated"] and not row["partial"]
    # The offline provider counts honestly with the same encoding: the estimate is exact here.
    honest_status, _, honest = chat(stack, key)
    assert honest_status == 200
    usage = json.loads(honest)["usage"]
    assert (row["input_uncached"], row["output"]) == (usage["prompt_tokens"], usage["completion_tokens"])


def test_sdk_sees_5xx_classes(stack, key):
    client = openai.OpenAI(base_url=stack.gateway_url + "/v1", api_key=key, max_retries=0)
    with pytest.raises(openai.APIStatusError) as e:
        client.chat.completions.create(model="ghost-model", messages=[{"role": "user", "content": "x"}])
    assert e.value.status_code == 502
    with pytest.raises(openai.APIStatusError) as e:
        client.chat.completions.create(model="slow-model", messages=[{"role": "user", "content": "x"}],
                                       extra_headers={"x-offline-fault": f"delay={SLOW_TIMEOUT_MS * 3}"})
    assert e.value.status_code == 504

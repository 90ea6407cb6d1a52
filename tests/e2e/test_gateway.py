"""The gateway end to end: real Envoy, real filter, control plane, offline providers."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time

import pytest

from conftest import ALPHA_KEY, KEY_CACHE_TTL_MS, PRICES, provider_saw
from tests.harness.stack import request

CHAT = "/v1/chat/completions"


def chat(stack, key, model="gpt-4o-mini", content="Say hello", headers=None, **extra):
    body = {"model": model, "messages": [{"role": "user", "content": content}], **extra}
    h = {"authorization": f"Bearer {key}", **(headers or {})}
    status, resp_headers, data = request("POST", stack.gateway_url + CHAT, body, h)
    return status, resp_headers, data


def error_of(data: bytes) -> dict:
    body = json.loads(data)
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    return body["error"]


def test_valid_key_gets_the_providers_answer(stack, key):
    status, headers, data = chat(stack, key, content="ping from e2e")
    assert status == 200, data
    body = json.loads(data)
    assert body["object"] == "chat.completion"
    assert "alpha provider serving gpt-4o-mini" in body["choices"][0]["message"]["content"]
    assert "ping from e2e" in body["choices"][0]["message"]["content"]
    assert len(headers["x-tollgate-request-id"]) == 32


def test_missing_and_unknown_keys_are_401(stack):
    status, _, data = request("POST", stack.gateway_url + CHAT,
                              {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]})
    assert status == 401
    assert error_of(data)["type"] == "authentication_error"

    status, _, data = chat(stack, "tg-" + "0" * 48)
    assert status == 401
    err = error_of(data)
    assert err["code"] == "invalid_api_key"

    status, _, data = request("POST", stack.gateway_url + CHAT, b"{}",
                              {"authorization": "Basic dXNlcjpwYXNz", "content-type": "application/json"})
    assert status == 401


def test_revoked_key_is_refused_within_the_cache_ttl(stack):
    key = stack.create_key("to-revoke")
    assert chat(stack, key)[0] == 200  # now cached in every worker's view of shared data
    stack.cli("keys", "revoke", stack.key_id("to-revoke"))
    revoked_at = time.monotonic()
    while True:
        status, _, data = chat(stack, key)
        if status == 401:
            break
        assert status == 200, data
        assert time.monotonic() - revoked_at < KEY_CACHE_TTL_MS / 1000 + 1.0, "revocation not seen in time"
        time.sleep(0.05)
    assert "revoked" in error_of(data)["message"]
    elapsed = time.monotonic() - revoked_at
    assert elapsed <= KEY_CACHE_TTL_MS / 1000 + 1.0
    print(f"revocation took effect after {elapsed:.2f}s (cache TTL {KEY_CACHE_TTL_MS} ms)")


def test_a_rotated_keys_old_secret_works_for_its_grace_then_stops(stack):
    old = stack.create_key("to-rotate")
    assert chat(stack, old)[0] == 200  # cached under the old secret
    out = stack.cli("keys", "rotate", stack.key_id("to-rotate"), "--grace", "3s", "--quiet")
    rotated_at = time.monotonic()
    new = out.strip()
    assert new.startswith("tg-") and new != old
    # Both secrets work during the grace, and calls under either are the same key's.
    status, headers, data = chat(stack, new)
    assert status == 200, data
    assert stack.usage(headers["x-tollgate-request-id"])["key_id"] == stack.key_id("to-rotate")
    status, _, data = chat(stack, old)
    assert status == 200, data
    while True:
        status, _, data = chat(stack, old)
        if status == 401:
            break
        assert status == 200, data
        # The filter was told to cache the old secret's answer only as long as its grace.
        assert time.monotonic() - rotated_at < 3.0 + 1.0, "the old secret outlived its grace"
        time.sleep(0.1)
    assert time.monotonic() - rotated_at >= 3.0 - 0.5, "the old secret stopped before its grace"
    assert "revoked or has expired" in error_of(data)["message"]
    assert chat(stack, new)[0] == 200


def test_an_expiring_key_is_refused_from_its_expiry_whatever_the_cache(stack):
    # Calls every 50 ms keep the key's answer cached: without the control plane capping the
    # cache at the expiry, a call just before it would keep the key working for up to a
    # whole cache TTL (1 s here) after it.
    assert KEY_CACHE_TTL_MS >= 1_000
    key = stack.cli("keys", "create", "--name", "short-lived", "--expires-in", "1500ms",
                    "--quiet").strip()
    created_at = time.monotonic()
    assert chat(stack, key)[0] == 200
    while True:
        status, _, data = chat(stack, key)
        if status == 401:
            break
        assert status == 200, data
        assert time.monotonic() - created_at < 1.5 + 0.4, "an expired key was still admitted"
        time.sleep(0.05)
    assert "revoked or has expired" in error_of(data)["message"]
    listed = [json.loads(line) for line in stack.cli("keys", "list", "--json").splitlines()]
    assert [k["status"] for k in listed if k["name"] == "short-lived"] == ["expired"]


def test_model_outside_the_keys_allow_list_is_403(stack):
    key = stack.create_key("mini-only", models=["gpt-4o-mini"])
    assert chat(stack, key, model="gpt-4o-mini")[0] == 200
    status, _, data = chat(stack, key, model="gpt-4o")
    assert status == 403
    err = error_of(data)
    assert err["type"] == "permission_error"
    assert err["param"] == "model"


def test_unserved_model_is_404(stack, key):
    status, _, data = chat(stack, key, model="no-such-model")
    assert status == 404
    assert error_of(data)["code"] == "model_not_found"


def test_malformed_json_is_400_naming_the_problem(stack, key):
    status, _, data = request("POST", stack.gateway_url + CHAT, b'{"model": "gpt-4o-mini", "messages": [',
                              {"authorization": f"Bearer {key}", "content-type": "application/json"})
    assert status == 400
    err = error_of(data)
    assert err["type"] == "invalid_request_error"
    assert "not valid JSON" in err["message"]
    assert err["code"] == "invalid_json"

    status, _, data = request("POST", stack.gateway_url + CHAT, b"model=gpt-4o-mini",
                              {"authorization": f"Bearer {key}", "content-type": "text/plain"})
    assert status == 400
    assert "text/plain" in error_of(data)["message"]


@pytest.mark.parametrize("body,param", [
    ({"messages": [{"role": "user", "content": "x"}]}, "model"),
    ({"model": "gpt-4o-mini"}, "messages"),
    ({"model": "gpt-4o-mini", "messages": []}, "messages"),
    ({"model": "gpt-4o-mini", "messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
    ({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}], "temperature": 9}, "temperature"),
    ({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}], "n": 0}, "n"),
])
def test_invalid_bodies_are_400_naming_the_field(stack, key, body, param):
    status, _, data = request("POST", stack.gateway_url + CHAT, body, {"authorization": f"Bearer {key}"})
    assert status == 400, data
    assert error_of(data)["param"] == param


def test_body_over_the_cap_is_413(stack, key):
    huge = "x" * (5 << 20)
    status, _, data = chat(stack, key, content=huge)
    assert status == 413, data[:200]


def test_other_endpoints_are_refused_not_proxied(stack, key):
    status, _, data = request("GET", stack.gateway_url + "/v1/files",
                              headers={"authorization": f"Bearer {key}"})
    assert status == 404
    assert "Unknown request URL" in error_of(data)["message"]


def test_routing_by_model_reaches_two_providers(stack, key):
    status, h1, d1 = chat(stack, key, model="gpt-4o-mini")
    assert status == 200
    status, h2, d2 = chat(stack, key, model="llama-3.1-8b")
    assert status == 200
    provider_saw(stack, "alpha", h1["x-tollgate-request-id"])
    provider_saw(stack, "beta", h2["x-tollgate-request-id"])
    assert "beta provider serving llama-3.1-8b" in json.loads(d2)["choices"][0]["message"]["content"]


def test_client_may_not_pick_the_provider(stack, key):
    status, headers, _ = chat(stack, key, model="gpt-4o-mini", headers={"x-tollgate-provider": "beta"})
    assert status == 200
    provider_saw(stack, "alpha", headers["x-tollgate-request-id"])
    _, _, seen_by_beta = request("GET", stack.provider_url("beta") + "/_offline/requests")
    assert headers["x-tollgate-request-id"] not in seen_by_beta.decode()


def test_keys_never_cross_the_gateway(stack, key):
    status, headers, data = chat(stack, key, model="gpt-4o-mini",
                                 headers={"x-api-key": key, "api-key": key})
    assert status == 200
    seen = provider_saw(stack, "alpha", headers["x-tollgate-request-id"])
    assert seen["authorization"] == f"Bearer {ALPHA_KEY}"
    assert key not in json.dumps(seen)
    assert ALPHA_KEY not in data.decode()
    assert all(ALPHA_KEY not in v for v in headers.values())


def test_usage_row_has_exact_tokens_and_cost(stack, key):
    status, headers, data = chat(stack, key, model="gpt-4o", content="count my tokens exactly",
                                 headers={"x-offline-cached-tokens": "4"})
    assert status == 200
    usage = json.loads(data)["usage"]
    row = stack.usage(headers["x-tollgate-request-id"])
    assert row["model"] == "gpt-4o" and row["provider"] == "alpha" and row["status"] == 200
    assert row["key_id"] == stack.key_id("e2e-all-models")
    assert row["cache_read"] == usage["prompt_tokens_details"]["cached_tokens"] == 4
    assert row["input_uncached"] == usage["prompt_tokens"] - 4
    assert row["output"] == usage["completion_tokens"]
    assert not row["partial"] and not row["estimated"]
    inp, out, cread, _ = PRICES["gpt-4o"]
    # Prices in micro-dollars per 1M tokens times tokens = pico-dollars, exactly.
    expected = (row["input_uncached"] * round(inp * 1e6) + row["cache_read"] * round(cread * 1e6)
                + row["output"] * round(out * 1e6))
    assert row["cost_picos"] == expected


def test_error_answers_are_metered_with_zero_tokens(stack, key):
    status, headers, data = chat(stack, key, headers={"x-offline-fault": "status=500"})
    assert status == 500
    row = stack.usage(headers["x-tollgate-request-id"])
    assert row["status"] == 500
    assert row["output"] == 0 and row["cost_picos"] == 0


def test_non_utf8_headers_do_not_break_the_filter(stack, key):
    status, _, _ = request("POST", stack.gateway_url + CHAT,
                           b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"x"}]}',
                           {"authorization": b"Bearer \xff\xfe\xfd".decode("latin-1"),
                            "content-type": "application/json"})
    assert status == 401
    # A header name that is not a token is refused by Envoy's codec before the filter reads
    # the header map (whose names the SDK turns into UTF-8 strings).
    raw_body = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"x"}]}'
    with socket.create_connection(("127.0.0.1", stack.gateway_port), timeout=10) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                     + key.encode() + b"\r\nContent-Type: application/json\r\nX-\xff\xfe: 1\r\n"
                     + b"Content-Length: " + str(len(raw_body)).encode() + b"\r\n\r\n" + raw_body)
        assert sock.recv(12) == b"HTTP/1.1 400"
    # The VM is still alive: the next calls on the same workers succeed.
    for _ in range(4):
        assert chat(stack, key)[0] == 200


def test_curl_gets_a_completion(stack, key):
    curl = shutil.which("curl")
    assert curl, "curl is needed for this test (README set-up installs it)"
    out = subprocess.run(
        [curl, "-sS", "-w", "\n%{http_code}", stack.gateway_url + CHAT,
         "-H", f"Authorization: Bearer {key}", "-H", "Content-Type: application/json",
         "-d", '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi from curl"}]}'],
        capture_output=True, text=True, timeout=30, check=True)
    body, _, code = out.stdout.rpartition("\n")
    assert code == "200", out.stdout
    assert "hi from curl" in json.loads(body)["choices"][0]["message"]["content"]


def test_official_openai_client_gets_a_completion(stack, key):
    import openai

    client = openai.OpenAI(base_url=stack.gateway_url + "/v1", api_key=key, max_retries=0)
    completion = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi from the sdk"}])
    assert "hi from the sdk" in completion.choices[0].message.content
    assert completion.usage.prompt_tokens > 0

    bad = openai.OpenAI(base_url=stack.gateway_url + "/v1", api_key="tg-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])

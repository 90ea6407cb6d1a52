"""Nothing escapes the meter: requests that end with trailers, odd-but-legal JSON, headers
that would reach the operator's account, options the price table does not cover, answers
larger than Envoy would buffer, and many large calls at once."""

from __future__ import annotations

import collections
import concurrent.futures
import http.client
import json
import socket
import time

import h2.config
import h2.connection
import h2.events
import pytest

from conftest import provider_saw
from tests.harness.stack import Provider, Stack, request

CHAT = "/v1/chat/completions"


def chat_body(content: str = "Say hi", **extra) -> dict:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}], **extra}


def error_of(data: bytes) -> dict:
    body = json.loads(data)
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    return body["error"]


def h2_post(port: int, path: str, headers: dict, body: bytes, trailers: dict | None,
            chunk: int = 16_000) -> tuple[int, dict, bytes]:
    """One HTTP/2 (cleartext, prior knowledge) POST whose body is sent in DATA frames and
    that ends with a trailers HEADERS frame when `trailers` is given."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=20)
    conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    sid = conn.get_next_available_stream_id()
    conn.send_headers(sid, [(":method", "POST"), (":path", path), (":scheme", "http"),
                            (":authority", f"127.0.0.1:{port}"), *headers.items()],
                      end_stream=not body and not trailers)
    sock.sendall(conn.data_to_send())
    status, resp_headers, data, done = 0, {}, b"", False
    sent = 0

    def pump() -> None:
        nonlocal status, resp_headers, data, done
        for event in conn.receive_data(sock.recv(65_536)):
            if isinstance(event, h2.events.ResponseReceived):
                resp_headers = {k.decode(): v.decode() for k, v in event.headers}
                status = int(resp_headers[":status"])
            elif isinstance(event, h2.events.DataReceived):
                data += event.data
                conn.acknowledge_received_data(event.flow_controlled_length, sid)
            elif isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
                done = True
        sock.sendall(conn.data_to_send())

    while sent < len(body) and not done:
        window = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size, chunk)
        if window <= 0:
            pump()
            continue
        piece = body[sent:sent + window]
        last = sent + len(piece) == len(body) and not trailers
        conn.send_data(sid, piece, end_stream=last)
        sent += len(piece)
        sock.sendall(conn.data_to_send())
    if trailers and not done:
        conn.send_headers(sid, list(trailers.items()), end_stream=True)
        sock.sendall(conn.data_to_send())
    while not done:
        pump()
    sock.close()
    return status, resp_headers, data


def auth(key: str) -> dict:
    return {"authorization": f"Bearer {key}", "content-type": "application/json"}


# -- 1. trailers ------------------------------------------------------------------------

def test_h2_trailers_cannot_skip_validation(stack, key):
    body = json.dumps(chat_body(temperature=99)).encode()
    status, _, data = h2_post(stack.gateway_port, CHAT, auth(key), body, {"x-trailer": "1"})
    assert status == 400, data
    assert error_of(data)["param"] == "temperature"


def test_h2_trailers_stream_gets_usage_injected_and_metered(stack, key):
    prompt = "count these words please " * 2_000
    body = json.dumps(chat_body(prompt, stream=True)).encode()
    status, headers, data = h2_post(stack.gateway_port, CHAT, auth(key), body, {"x-trailer": "1"})
    assert status == 200, data[:300]
    rid = headers["x-tollgate-request-id"]
    seen = provider_saw(stack, "alpha", rid)
    assert seen["body"]["stream_options"] == {"include_usage": True}
    assert b'"usage"' not in data, "the client did not ask for usage"
    row = stack.usage(rid)
    assert not row["estimated"]
    assert row["input_uncached"] == seen["usage"]["prompt_tokens"] > 5_000


def test_h2_trailers_on_a_key_cache_miss_send_the_whole_body(stack):
    fresh = stack.create_key("trailers-fresh-key")
    body = json.dumps(chat_body("a body that must arrive whole " * 500)).encode()
    status, headers, data = h2_post(stack.gateway_port, CHAT, auth(fresh), body, {"x-trailer": "1"})
    assert status == 200, data[:300]
    seen = provider_saw(stack, "alpha", headers["x-tollgate-request-id"])
    assert seen["body"]["messages"][0]["content"] == "a body that must arrive whole " * 500


def test_h2_headers_then_trailers_with_no_body_is_refused(stack, key):
    status, _, data = h2_post(stack.gateway_port, CHAT, auth(key), b"", {"x-trailer": "1"})
    assert 400 <= status < 500, (status, data)
    error_of(data)


def test_http1_chunked_body_with_trailers_is_validated(stack, key):
    payload = json.dumps(chat_body(n=500)).encode()
    raw = (b"POST " + CHAT.encode() + b" HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
           b"Authorization: Bearer " + key.encode() + b"\r\nContent-Type: application/json\r\n"
           b"Trailer: x-trailer\r\n\r\n" + f"{len(payload):x}\r\n".encode() + payload
           + b"\r\n0\r\nx-trailer: 1\r\n\r\n")
    with socket.create_connection(("127.0.0.1", stack.gateway_port), timeout=10) as s:
        s.sendall(raw)
        resp = http.client.HTTPResponse(s)
        resp.begin()
        data = resp.read()
    assert resp.status == 400, data
    assert error_of(data)["param"] == "n"


# -- 2. odd-but-legal JSON ----------------------------------------------------------------

def test_stream_options_null_still_gets_the_providers_usage(stack, key):
    prompt = "x" * 10 + " and some words " * 20_000  # ~300 KB
    body = chat_body(prompt, stream=True, stream_options=None)
    conn = http.client.HTTPConnection(f"127.0.0.1:{stack.gateway_port}", timeout=30)
    conn.request("POST", CHAT, body=json.dumps(body), headers=auth(key))
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    assert resp.status == 200
    rid = resp.getheader("x-tollgate-request-id")
    seen = provider_saw(stack, "alpha", rid)
    assert seen["body"]["stream_options"] == {"include_usage": True}
    assert b'"usage"' not in data
    row = stack.usage(rid)
    assert not row["estimated"]
    assert row["input_uncached"] == seen["usage"]["prompt_tokens"] > 50_000


@pytest.mark.parametrize("model", [True, 5, 1.5, ["gpt-4o-mini"], {"a": 1}])
def test_a_model_of_another_json_type_is_refused(stack, key, model):
    status, _, data = request("POST", stack.gateway_url + CHAT,
                              {"model": model, "messages": [{"role": "user", "content": "x"}]}, auth(key))
    assert status == 400, data
    assert error_of(data)["param"] == "model"


def test_duplicated_stream_key_is_never_served_unmetered(stack, key):
    # json_to_metadata and the filter's parser could each read a different copy.
    raw = (b'{"model":"gpt-4o-mini","stream":false,"messages":[{"role":"user","content":"hi"}],'
           b'"stream":true}')
    status, headers, data = request("POST", stack.gateway_url + CHAT, raw, auth(key))
    if status == 200:
        row = stack.usage(headers["x-tollgate-request-id"])
        assert not row["estimated"] and row["input_uncached"] > 0, row
    else:
        assert status == 400 and error_of(data)["param"] == "stream"


# -- 3. headers ---------------------------------------------------------------------------

def test_client_headers_and_query_that_reach_the_account_are_dropped(stack, key):
    sent = {**auth(key), "OpenAI-Organization": "org-attacker", "OpenAI-Project": "proj_attacker",
            "anthropic-beta": "context-1m-2025-08-07", "Cookie": "session=x", "x-api-key": "sk-mine",
            "api-key": "sk-mine2", "x-custom-thing": "1", "x-tollgate-provider": "beta",
            "x-offline-cached-tokens": "0"}
    status, headers, data = request("POST", stack.gateway_url + CHAT + "?api-version=2&org=x",
                                    chat_body(), sent)
    assert status == 200, data
    seen = provider_saw(stack, "alpha", headers["x-tollgate-request-id"])
    names = set(seen["header_names"])
    for dropped in ["openai-organization", "openai-project", "anthropic-beta", "cookie", "x-api-key",
                    "api-key", "x-custom-thing", "x-forwarded-for", "x-tollgate-provider"]:
        assert dropped not in names, dropped
    assert "x-offline-cached-tokens" in names, "the operator's forward_headers pass"
    assert seen["path_and_query"] is None and seen["path"] == CHAT
    assert seen["authorization"].startswith("Bearer sk-alpha"), "the provider's own key"


def test_provider_account_headers_and_cookies_never_reach_the_client(stack, key):
    status, headers, _ = request("POST", stack.gateway_url + CHAT, chat_body(),
                                 {**auth(key), "x-offline-fault": "account-headers"})
    assert status == 200
    for h in ["openai-organization", "openai-project", "anthropic-organization-id", "set-cookie"]:
        assert h not in headers, h
    assert headers["x-ratelimit-remaining-requests"] == "9999", "back-off headers pass"


# -- 4. options the price table does not cover --------------------------------------------

@pytest.mark.parametrize("path,body,param", [
    (CHAT, chat_body(service_tier="priority"), "service_tier"),
    (CHAT, chat_body(service_tier="flex"), "service_tier"),
    (CHAT, chat_body(web_search_options={}), "web_search_options"),
    ("/v1/responses", {"model": "gpt-4o-mini", "input": "hi", "background": True}, "background"),
    ("/v1/responses", {"model": "gpt-4o-mini", "input": "hi", "tools": [{"type": "web_search"}]},
     "tools[0].type"),
])
def test_options_the_gateway_cannot_price_are_refused(stack, key, path, body, param):
    status, _, data = request("POST", stack.gateway_url + path, body, auth(key))
    assert status == 400, data
    err = error_of(data)
    assert (err["param"], err["code"]) == (param, "unmetered_option")


def test_the_default_service_tier_passes(stack, key):
    status, _, data = request("POST", stack.gateway_url + CHAT, chat_body(service_tier="default"), auth(key))
    assert status == 200, data


# -- 5. answers larger than Envoy buffers -------------------------------------------------

def test_a_twenty_mebibyte_embeddings_answer_arrives_whole_and_metered(stack, key):
    inputs = [f"text number {i} to embed" for i in range(300)]
    conn = http.client.HTTPConnection(f"127.0.0.1:{stack.gateway_port}", timeout=120)
    conn.request("POST", "/v1/embeddings", headers=auth(key), body=json.dumps(
        {"model": "text-embedding-3-small", "input": inputs, "dimensions": 4096}))
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    assert resp.status == 200
    assert len(data) > 16 * 1024 * 1024, len(data)
    answer = json.loads(data)
    assert len(answer["data"]) == 300 and len(answer["data"][0]["embedding"]) == 4096
    row = stack.usage(resp.getheader("x-tollgate-request-id"))
    assert not row["estimated"] and not row["partial"]
    assert row["input_uncached"] == answer["usage"]["prompt_tokens"] > 0


# -- 6. many large calls at once ------------------------------------------------------------

def test_hundreds_of_concurrent_large_streams_trap_no_vm_and_all_are_metered(tmp_path):
    # Its own stack, keys cached for the whole burst: what is measured is the filter's
    # memory, not the control plane's answer time on two busy cores.
    s = Stack(workdir=tmp_path, providers=[Provider("alpha", {"gpt-4o-mini": (0.15, 0.6, 0, 0)})],
              key_cache_ttl_ms=120_000)
    s.start()
    try:
        key = s.create_key("burst")
        for _ in range(4):  # both workers' VMs see the key once
            request("POST", s.gateway_url + CHAT, chat_body(), auth(key))
        big = "lorem ipsum dolor sit amet " * 45_000  # ~1.2 MB per prompt
        body = json.dumps(chat_body(big, stream=True)).encode()
        calls = 200

        def one(_):
            conn = http.client.HTTPConnection(f"127.0.0.1:{s.gateway_port}", timeout=120)
            conn.request("POST", CHAT, body=body, headers={**auth(key), "x-offline-fault": "slow=20"})
            resp = conn.getresponse()
            data = resp.read()
            conn.close()
            return resp.status, resp.getheader("x-tollgate-request-id"), data

        with concurrent.futures.ThreadPoolExecutor(max_workers=calls) as pool:
            results = list(pool.map(one, range(calls)))
        print("statuses", sorted(collections.Counter(status for status, _, _ in results).items()))
        served = [rid for status, rid, _ in results if status == 200]
        for status, _, data in results:
            if status != 200:
                assert status == 503 and error_of(data)["code"] == "gateway_overloaded", (status, data[:200])
        assert len(served) >= calls // 2, f"only {len(served)} of {calls} served"
        _, _, seen = request("GET", s.provider_url("alpha") + "/_offline/requests")
        provider_served = {x["request_id"] for x in json.loads(seen) if x["body_bytes"] > 1_000_000}
        assert set(served) <= provider_served
        rows = [s.usage(rid, timeout=60) for rid in provider_served]
        assert all(r["input_uncached"] > 100_000 and not r["estimated"] for r in rows)
        log = (s.workdir / "envoy.log").read_text(errors="replace").lower()
        assert "trap" not in log and "out of memory" not in log and "failed to load" not in log
    finally:
        s.stop()


def test_a_worker_past_its_inflight_bytes_refuses_with_json_503(tmp_path):
    # Each call in flight holds a fixed charge for its metering state (128 KiB) and, while
    # its body is checked, the body: 14 held streams leave no room for a 300 KB body.
    s = Stack(workdir=tmp_path, providers=[Provider("alpha", {"gpt-4o-mini": (0.15, 0.6, 0, 0)})],
              envoy_concurrency=1,
              filter_settings={"max_body_bytes": 1 << 20, "max_inflight_bytes": 2 << 20})
    s.start()
    try:
        key = s.create_key("inflight")
        big = json.dumps(chat_body("y" * 300_000)).encode()

        def held_stream(_):
            conn = http.client.HTTPConnection(f"127.0.0.1:{s.gateway_port}", timeout=30)
            conn.request("POST", CHAT, body=json.dumps(chat_body(stream=True)),
                         headers={**auth(key), "x-offline-fault": "slow=150"})
            resp = conn.getresponse()
            resp.read()
            conn.close()
            return resp.status

        with concurrent.futures.ThreadPoolExecutor(max_workers=14) as pool:
            streams = [pool.submit(held_stream, i) for i in range(14)]
            time.sleep(1.0)
            status, _, data = request("POST", s.gateway_url + CHAT, big, auth(key))
            assert status == 503, data[:200]
            assert error_of(data)["code"] == "gateway_overloaded"
            assert [f.result() for f in streams] == [200] * 14
        status, _, data = request("POST", s.gateway_url + CHAT, big, auth(key))
        assert status == 200, data[:200]
    finally:
        s.stop()

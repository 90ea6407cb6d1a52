"""The gateway as an edge (issue 12): whatever Envoy itself answers is OpenAI-shaped JSON,
slow and idle clients are cut off without hurting others, browsers get CORS, every answer
carries the security headers, and each call leaves one JSON access-log line and its
counts in Envoy's stats. Raw sockets send what no HTTP library would."""

from __future__ import annotations

import json
import re
import socket
import threading
import time

import pytest

from conftest import priced
from tests.harness.stack import Provider, Stack, request

HEADERS_TIMEOUT_MS = 2000
IDLE_TIMEOUT_MS = 3000
MAX_BODY = 1 << 20
BUFFER_LIMIT = 2 << 20
ORIGIN = "https://app.example.com"
PROVIDER_KEY = "sk-edge-provider-secret-0001"


@pytest.fixture(scope="module")
def edge(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("edge")
    s = Stack(
        workdir=workdir,
        providers=[Provider("alpha", priced("gpt-4o-mini"), kind="openai", api_key=PROVIDER_KEY)],
        filter_settings={"max_body_bytes": MAX_BODY},
        envoy_settings={"request_headers_timeout_ms": HEADERS_TIMEOUT_MS,
                        "idle_timeout_ms": IDLE_TIMEOUT_MS,
                        "buffer_limit_bytes": BUFFER_LIMIT,
                        "access_log": str(workdir / "access.log")},
        cors={"allowed_origins": [ORIGIN]},
    )
    s.start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def edge_key(edge):
    return edge.create_key("edge", user="ada", team="ml")


def raw(stack, data: bytes, timeout: float = 10.0) -> bytes:
    """Sends `data` on a new connection and reads until Envoy closes it (or `timeout`)."""
    with socket.create_connection(("127.0.0.1", stack.gateway_port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
                if b"\r\n\r\n" in out and _whole(out):
                    break
        except socket.timeout:
            pass
        return out


def _whole(response: bytes) -> bool:
    head, _, body = response.partition(b"\r\n\r\n")
    m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    return bool(m) and len(body) >= int(m.group(1))


def parse(response: bytes) -> tuple[int, dict, bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


def assert_openai_error(status: int, headers: dict, body: bytes, expect_status: int, code: str):
    assert status == expect_status, (status, body)
    assert headers["content-type"] == "application/json"
    error = json.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert error["code"] == code, error
    assert error["type"] == ("api_error" if status >= 500 else "invalid_request_error")
    assert error["message"]
    assert headers.get("x-content-type-options") == "nosniff"
    assert headers.get("cache-control") == "no-store"
    assert "server" not in headers, headers


# Each class of request Envoy's codec or limits refuse before any filter runs.
MALFORMED = {
    "malformed_request_line": (b"GARBAGE\r\n\r\n", 400, "invalid_http_request"),
    "malformed_method": (b"G@T /v1/models HTTP/1.1\r\nHost: x\r\n\r\n", 400, "invalid_http_request"),
    "space_in_header_name": (b"GET /v1/models HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n",
                             400, "invalid_http_request"),
    "bad_content_length": (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
                           400, "invalid_http_request"),
    "content_length_and_transfer_encoding": (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, "invalid_http_request"),
    "nul_in_header_value": (b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
                            400, "invalid_http_request"),
    "lf_in_header_value": (b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-A: a\nb\r\n\r\n",
                           400, "invalid_http_request"),
    "underscore_in_header_name": (b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX_Api_Key: k\r\n\r\n",
                                  400, "invalid_http_request"),
    "escaped_slash_in_path": (b"GET /v1%2Fmodels HTTP/1.1\r\nHost: x\r\n\r\n",
                              400, "invalid_http_request"),
    "headers_too_large": (b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * 70_000 + b"\r\n\r\n",
                          431, "request_headers_too_large"),
    "too_many_headers": (b"GET /v1/models HTTP/1.1\r\nHost: x\r\n"
                         + b"".join(b"X-%d: a\r\n" % i for i in range(150)) + b"\r\n",
                         431, "request_headers_too_large"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_envoys_own_refusals_are_openai_errors(edge, case):
    data, status, code = MALFORMED[case]
    assert_openai_error(*parse(raw(edge, data)), status, code)


def test_a_body_over_envoys_buffer_is_a_413_openai_error(edge, edge_key):
    body = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"' + b"a" * BUFFER_LIMIT + b'"}]}'
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {edge_key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    assert_openai_error(*parse(raw(edge, head + body)), 413, "request_too_large")


def test_a_provider_that_cannot_be_reached_is_a_502_openai_error(stack, key):
    status, headers, body = request("POST", stack.gateway_url + "/v1/chat/completions",
                                    {"model": "ghost-model", "messages": [{"role": "user", "content": "hi"}]},
                                    {"authorization": f"Bearer {key}"})
    assert status == 502, body
    assert json.loads(body)["error"]["code"] == "provider_unreachable"
    assert headers.get("x-content-type-options") == "nosniff"


def chat(stack, key, content="hello", headers=None, **extra):
    return request("POST", stack.gateway_url + "/v1/chat/completions",
                   {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}], **extra},
                   {"authorization": f"Bearer {key}", **(headers or {})})


def test_a_header_trickling_client_is_closed_while_others_are_served(edge, edge_key):
    trickle_seconds = 30
    outcome = {}

    def trickle():
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", edge.gateway_port), timeout=trickle_seconds) as s:
            s.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n")
            received = b""
            try:
                for i in range(trickle_seconds * 4):
                    s.sendall(b"X-Slow-%d: a\r\n" % i)
                    time.sleep(0.25)
            except OSError:
                pass  # closed by Envoy
            try:
                while chunk := s.recv(4096):
                    received += chunk
            except OSError:
                pass
        outcome["seconds"] = time.monotonic() - started
        outcome["response"] = received

    slow = threading.Thread(target=trickle)
    slow.start()
    results = []
    for i in range(20):
        status, _, body = chat(edge, edge_key, content=f"ordinary {i}")
        results.append(status)
    slow.join()
    assert results == [200] * 20
    # Cut at the request-headers timeout, long before it would have finished trickling.
    assert outcome["seconds"] < trickle_seconds / 2, outcome
    status, headers, body = parse(outcome["response"])
    assert_openai_error(status, headers, body, 408, "request_timeout")


def test_idle_connections_do_not_starve_new_clients_and_are_reaped(edge, edge_key):
    idle = [socket.create_connection(("127.0.0.1", edge.gateway_port), timeout=30) for _ in range(200)]
    try:
        for i in range(10):
            status, _, body = chat(edge, edge_key, content=f"while idle {i}")
            assert status == 200, body
        # A connection with nothing in flight is closed after the idle timeout.
        idle[0].settimeout(IDLE_TIMEOUT_MS / 1000 * 5)
        assert idle[0].recv(1) == b"", "Envoy closed the idle connection"
    finally:
        for s in idle:
            s.close()


def test_security_headers_on_relayed_answers_and_no_upstream_identification(edge, edge_key):
    status, headers, body = chat(edge, edge_key)
    assert status == 200, body
    assert headers.get("x-content-type-options") == "nosniff"
    assert headers.get("cache-control") == "no-store"
    assert "server" not in headers
    assert not [h for h in headers if h.startswith("x-envoy-")], headers
    status, headers, _ = chat(edge, "sk-not-a-key")
    assert status == 401
    assert headers.get("x-content-type-options") == "nosniff"
    assert headers.get("cache-control") == "no-store"


def test_client_tollgate_headers_are_stripped_on_entry(edge, edge_key):
    forged = "f" * 32
    status, headers, _ = chat(edge, edge_key, headers={"x-tollgate-request-id": forged,
                                                        "x-tollgate-user": "root"})
    assert status == 200
    request_id = headers["x-tollgate-request-id"]
    assert request_id != forged
    _, _, seen = request("GET", edge.provider_url("alpha") + "/_offline/requests")
    mine = [s for s in json.loads(seen) if s["request_id"] == request_id]
    assert len(mine) == 1
    assert "x-tollgate-user" not in mine[0]["header_names"]
    assert not [s for s in json.loads(seen) if s["request_id"] == forged]


def preflight(stack, origin: str):
    return request("OPTIONS", stack.gateway_url + "/v1/chat/completions", None, {
        "origin": origin, "access-control-request-method": "POST",
        "access-control-request-headers": "authorization, content-type"})


def test_cors_preflight_is_allowed_for_a_configured_origin_only(edge):
    status, headers, _ = preflight(edge, ORIGIN)
    assert status == 200
    assert headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in headers["access-control-allow-methods"]
    assert "authorization" in headers["access-control-allow-headers"]
    status, headers, _ = preflight(edge, "https://evil.example")
    assert "access-control-allow-origin" not in headers, (status, headers)


def test_a_browser_can_read_the_filters_refusals(edge):
    status, headers, body = chat(edge, "sk-not-a-key", headers={"origin": ORIGIN})
    assert status == 401
    assert headers["access-control-allow-origin"] == ORIGIN
    exposed = headers["access-control-expose-headers"]
    assert "x-tollgate-request-id" in exposed and "x-ratelimit-remaining-requests" in exposed
    assert json.loads(body)["error"]["code"] == "invalid_api_key"


def access_log_lines(stack, request_id: str | None = None, timeout: float = 10.0) -> list[dict]:
    """Every line of the access log (each must be one JSON object); waits for the line
    of `request_id`, if given."""
    path = stack.workdir / "access.log"
    deadline = time.monotonic() + timeout
    while True:
        lines = [json.loads(line) for line in path.read_text().splitlines() if line]
        if request_id is None or any(line.get("request_id") == request_id for line in lines):
            return lines
        assert time.monotonic() < deadline, f"no access-log line for {request_id}"
        time.sleep(0.2)


def test_an_access_log_line_carries_usage_and_cost_and_no_secret(edge, edge_key):
    status, headers, body = chat(edge, edge_key, content="count my tokens")
    assert status == 200, body
    request_id = headers["x-tollgate-request-id"]
    row = edge.usage(request_id)
    line = next(li for li in access_log_lines(edge, request_id) if li.get("request_id") == request_id)
    assert line["status"] == 200
    assert line["outcome"] == "admitted"
    assert line["key_id"] == edge.key_id("edge")
    assert (line["user"], line["team"]) == ("ada", "ml")
    assert (line["model"], line["provider"]) == ("gpt-4o-mini", "alpha")
    for kind in ("input_uncached", "cache_read", "cache_write", "output", "reasoning"):
        assert line[kind] == row[kind], kind
    assert line["output"] > 0
    assert line["cost_picos"] == row["cost_picos"] > 0
    assert line["streamed"] is False and line["partial"] is False and line["estimated"] is False
    assert line["duration_ms"] >= 0 and line["first_byte_ms"] >= 0
    text = (edge.workdir / "access.log").read_text()
    for secret in (edge_key, PROVIDER_KEY, edge.sidecar_token, "count my tokens"):
        assert secret not in text


def test_refused_and_codec_rejected_calls_are_logged_too(edge):
    status, headers, _ = chat(edge, "sk-unknown-key-for-the-log")
    assert status == 401
    request_id = headers["x-tollgate-request-id"]
    line = next(li for li in access_log_lines(edge, request_id) if li.get("request_id") == request_id)
    assert (line["outcome"], line["refusal"], line["status"]) == ("refused", "invalid_api_key", 401)
    raw(edge, b"GARBAGE\r\n\r\n")
    deadline = time.monotonic() + 10
    while not [li for li in access_log_lines(edge) if li["status"] == 400 and "request_id" not in li]:
        assert time.monotonic() < deadline, "the codec's refusal was not logged"
        time.sleep(0.2)


def prometheus(stack) -> dict[str, float]:
    _, _, body = request("GET", stack.admin_url + "/stats/prometheus")
    values = {}
    for line in body.decode().splitlines():
        if line.startswith("tollgate_"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def test_metrics_count_refusals_by_reason_and_tokens_by_kind(edge, edge_key):
    before = prometheus(edge)
    for _ in range(3):
        assert chat(edge, "sk-metrics-unknown")[0] == 401
    status, headers, _ = chat(edge, edge_key)
    assert status == 200
    row = edge.usage(headers["x-tollgate-request-id"])
    after = prometheus(edge)
    refusals = 'tollgate_refusals_total{reason="invalid_api_key"}'
    assert after[refusals] - before.get(refusals, 0) == 3
    outputs = 'tollgate_tokens_total{kind="output"}'
    assert after[outputs] - before.get(outputs, 0) == row["output"]
    assert after['tollgate_requests_total{outcome="admitted"}'] >= 1
    assert after.get('tollgate_usage_records_total{state="sent"}', 0) >= 1
    # Labels come from a small fixed set; none names a key or a user.
    labels = {m for name in after for m in re.findall(r'(\w+)="', name)}
    assert labels <= {"outcome", "reason", "kind", "result", "state", "le"}, labels
    assert edge.key_id("edge") not in " ".join(after)

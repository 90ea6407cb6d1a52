"""The HTTP API on the real control plane, over a real socket: the first admin from the
CLI signs in, the session cookie carries its protections, and the API refuses what it
must (no session, a forged one) with JSON errors and security headers."""

from __future__ import annotations

import http.client
import json
import secrets
import time

from tests.harness.stack import request


def login(stack, name: str, password: str):
    """POST /api/auth/login; returns (status, headers as (name, value) pairs, body)."""
    conn = http.client.HTTPConnection(stack.control_plane_url.removeprefix("http://"), timeout=30)
    try:
        conn.request("POST", "/api/auth/login", body=json.dumps({"name": name, "password": password}),
                     headers={"content-type": "application/json"})
        resp = conn.getresponse()
        return resp.status, [(k.lower(), v) for k, v in resp.getheaders()], resp.read()
    finally:
        conn.close()


def test_the_first_admin_signs_in_over_http(stack):
    name = f"admin-{secrets.token_hex(4)}"
    password = secrets.token_urlsafe(18)
    out = stack.cli("users", "create", name, "--role", "admin", stdin=password + "\n")
    assert "created with role admin" in out
    status, headers, body = login(stack, name, password)
    assert status == 200, body
    session = json.loads(body)
    assert session["user"]["role"] == "admin"
    cookie = next(v for k, v in headers if k == "set-cookie" and v.startswith("tollgate_session="))
    for flag in ("HttpOnly", "Secure", "SameSite=Strict"):
        assert flag in cookie
    assert ("content-security-policy", "default-src 'self'") in headers
    assert ("x-frame-options", "DENY") in headers

    bearer = {"authorization": f"Bearer {session['token']}"}
    status, _, body = request("GET", f"{stack.control_plane_url}/api/auth/me", headers=bearer)
    assert status == 200 and json.loads(body)["name"] == name
    status, _, body = request("GET", f"{stack.control_plane_url}/api/users", headers=bearer)
    assert status == 200 and name in [u["name"] for u in json.loads(body)]

    status, _, _ = request("POST", f"{stack.control_plane_url}/api/auth/logout", headers=bearer)
    assert status == 204
    status, _, body = request("GET", f"{stack.control_plane_url}/api/auth/me", headers=bearer)
    assert status == 401 and json.loads(body)["error"]["code"] == "unauthenticated"
    # Nothing the API answered or logged holds the password.
    log = next(p for p in stack.procs if p.name == "control-plane").log.read_text(errors="replace")
    assert password not in log and session["token"] not in log


def test_no_session_and_a_forged_one_are_json_401s(stack):
    for headers in ({}, {"authorization": "Bearer e30.AAAA"}, {"authorization": "Bearer ' OR 1=1 --"}):
        status, got, body = request("GET", f"{stack.control_plane_url}/api/users", headers=headers)
        assert status == 401, body
        assert json.loads(body)["error"]["code"] == "unauthenticated"
        assert got["x-content-type-options"] == "nosniff"


def test_a_disabled_users_keys_stop_within_the_cache_ttl(stack):
    from conftest import KEY_CACHE_TTL_MS

    name = f"leaver-{secrets.token_hex(4)}"
    stack.cli("users", "create", name, stdin=secrets.token_urlsafe(18) + "\n")
    key = stack.create_key(f"{name}-key", user=name)
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    chat = lambda: request("POST", stack.gateway_url + "/v1/chat/completions", body,  # noqa: E731
                           {"authorization": f"Bearer {key}"})
    assert chat()[0] == 200  # cached now
    stack.cli("users", "disable", name)
    disabled_at = time.monotonic()
    while True:
        status, _, data = chat()
        if status == 401:
            break
        assert status == 200, data
        assert time.monotonic() - disabled_at < KEY_CACHE_TTL_MS / 1000 + 1.0, "still admitted"
        time.sleep(0.05)
    stack.cli("users", "enable", name)
    enabled_at = time.monotonic()
    while chat()[0] != 200:
        assert time.monotonic() - enabled_at < KEY_CACHE_TTL_MS / 1000 + 1.0, "still refused"
        time.sleep(0.05)

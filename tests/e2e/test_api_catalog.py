"""Providers, models and prices through the HTTP API of the real control plane, over a
real socket: a provider key goes in once and never comes out (no answer, no log line),
a base URL at the cloud metadata address is refused, and a price added for later leaves
the price in force alone until then."""

from __future__ import annotations

import json
import secrets
import time

from tests.harness.stack import request


def admin_headers(stack) -> dict:
    """A new admin, from the CLI, signed in; the bearer header of their session."""
    name = f"catalog-admin-{secrets.token_hex(4)}"
    password = secrets.token_urlsafe(18)
    stack.cli("users", "create", name, "--role", "admin", stdin=password + "\n")
    status, _, body = request("POST", f"{stack.control_plane_url}/api/auth/login",
                              body={"name": name, "password": password})
    assert status == 200, body
    return {"authorization": f"Bearer {json.loads(body)['token']}"}


def test_a_provider_key_goes_in_once_and_never_comes_out(stack):
    api = f"{stack.control_plane_url}/api"
    headers = admin_headers(stack)
    key = f"sk-e2e-provider-{secrets.token_hex(12)}"
    name = f"api-{secrets.token_hex(3)}"
    answers = []

    def call(method: str, path: str, body: dict | None = None):
        status, _, raw = request(method, f"{api}{path}", body=body, headers=headers)
        answers.append(raw)
        return status, (json.loads(raw) if raw else None)

    status, created = call("POST", "/providers",
                           {"name": name, "base_url": stack.provider_url("alpha"), "api_key": key})
    assert status == 201, created
    assert created["has_key"] and created["key_fingerprint"].startswith("sha256:")
    status, listed = call("GET", "/providers")
    assert status == 200 and name in [p["name"] for p in listed]
    assert "alpha" in [p["name"] for p in listed if p["source"] == "config"]

    model = f"{name}-model"
    status, made = call("POST", "/models", {"name": model, "provider": name,
                                            "price": {"input": 2, "output": 8}})
    assert status == 201, made
    later = int(time.time() * 1000) + 3_600_000
    status, repriced = call("POST", f"/models/{model}/prices",
                            {"effective_from_ms": later, "input": 4, "output": 16})
    assert status == 201, repriced
    assert repriced["price"] == {"input": 2.0, "output": 8.0, "cache_read": 0.0, "cache_write": 0.0}
    assert [p["effective_from_ms"] for p in repriced["prices"]][1] == later

    status, refused = call("POST", "/providers", {"name": f"{name}-meta", "api_key": key,
                                                  "base_url": "http://169.254.169.254"})
    assert status == 422 and "`base_url`" in refused["error"]["message"], refused

    assert call("DELETE", f"/models/{model}")[0] == 204
    assert call("DELETE", f"/providers/{name}")[0] == 204
    for raw in answers:
        assert key.encode() not in raw
    log = next(p for p in stack.procs if p.name == "control-plane").log.read_text(errors="replace")
    assert key not in log
    assert stack.master_key not in log

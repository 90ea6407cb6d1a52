"""The README's walk through the HTTP API, on the real stack: the first admin from the CLI,
a member created over HTTP, her own key created over HTTP, a metered call through Envoy
with it, and the key's rotation and revocation reaching the gateway."""

from __future__ import annotations

import json
import secrets
import time

from conftest import KEY_CACHE_TTL_MS
from tests.harness.stack import request

CHAT = "/v1/chat/completions"


def api(stack, method: str, path: str, token: str, body: dict | None = None):
    status, _, data = request(method, stack.control_plane_url + path, body,
                              {"authorization": f"Bearer {token}"})
    return status, (json.loads(data) if data else None)


def login(stack, name: str, password: str) -> str:
    status, _, data = request("POST", stack.control_plane_url + "/api/auth/login",
                              {"name": name, "password": password})
    assert status == 200, data
    return json.loads(data)["token"]


def chat(stack, key: str):
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}
    return request("POST", stack.gateway_url + CHAT, body, {"authorization": f"Bearer {key}"})


def test_from_the_first_admin_to_a_metered_call_with_a_members_own_key(stack):
    admin, admin_pw = f"root-{secrets.token_hex(3)}", secrets.token_urlsafe(18)
    stack.cli("users", "create", admin, "--role", "admin", stdin=admin_pw + "\n")
    root = login(stack, admin, admin_pw)
    alice, alice_pw = f"alice-{secrets.token_hex(3)}", secrets.token_urlsafe(18)
    status, user = api(stack, "POST", "/api/users", root,
                       {"name": alice, "role": "member", "password": alice_pw})
    assert status == 201, user
    member = login(stack, alice, alice_pw)

    status, issued = api(stack, "POST", "/api/keys", member, {"name": "laptop", "models": ["gpt-4o-mini"]})
    assert status == 201, issued
    assert issued["key"]["user"] == alice
    secret = issued["secret"]

    status, headers, data = chat(stack, secret)
    assert status == 200, data
    row = stack.usage(headers["x-tollgate-request-id"])
    assert (row["key_id"], row["user"]) == (issued["key"]["id"], alice), "metered as alice"

    # Her listing holds her key and never its secret; the admin sees it too.
    status, listing = api(stack, "GET", "/api/keys", member)
    assert status == 200 and [k["id"] for k in listing] == [issued["key"]["id"]]
    assert secret not in json.dumps(listing)
    assert issued["key"]["id"] in [k["id"] for k in api(stack, "GET", "/api/keys", root)[1]]

    # A rotation without grace: the old secret is refused within the key cache time.
    status, rotated = api(stack, "POST", f"/api/keys/{issued['key']['id']}/rotate", member,
                          {"grace_seconds": 0})
    assert status == 200, rotated
    deadline = time.monotonic() + KEY_CACHE_TTL_MS / 1000 + 1.0
    while chat(stack, secret)[0] != 401:
        assert time.monotonic() < deadline, "the rotated-out secret still works"
        time.sleep(0.05)
    assert chat(stack, rotated["secret"])[0] == 200

    status, revoked = api(stack, "POST", f"/api/keys/{issued['key']['id']}/revoke", member)
    assert (status, revoked["status"]) == (200, "revoked")
    deadline = time.monotonic() + KEY_CACHE_TTL_MS / 1000 + 1.0
    while chat(stack, rotated["secret"])[0] != 401:
        assert time.monotonic() < deadline, "the revoked key still works"
        time.sleep(0.05)

    log = next(p for p in stack.procs if p.name == "control-plane").log.read_text(errors="replace")
    for s in (secret, rotated["secret"], alice_pw, admin_pw, member, root):
        assert s not in log, "a secret reached the control plane's log"

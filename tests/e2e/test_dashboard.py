"""The dashboard in real headless Chromium (Debian's, driven by Playwright), served by the
real control plane in front of the real Envoy: sign-in, keys whose secret shows once and
calls through Envoy, what members and viewers may see and do, and hostile names shown as
text with no script run."""

from __future__ import annotations

import json
import secrets

import pytest
from playwright.sync_api import sync_playwright

from tests.harness.stack import ROOT, Provider, Stack, request

CHROMIUM = "/usr/bin/chromium"
# Without the background-networking flags Chromium keeps dialing Google's hosts, which this
# machine's closed network refuses.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOTS = ROOT / "docs" / "screenshots"
# USD per 1M tokens: input, output, cache read, cache write.
PRICES = {"gpt-4o-mini": (0.15, 0.6, 0.075, 0.0)}
HOSTILE_KEY = "<img src=x onerror=alert(1)>"
HOSTILE_USER = '"><script>alert(1)</script>'


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = Stack(workdir=tmp_path_factory.mktemp("dashboard"),
              providers=[Provider("alpha", PRICES, kind="openai")], dashboard=True)
    s.start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def people(stack):
    """name -> password of an admin, a member, a viewer and a member with a hostile name."""
    made = {}
    for name, role in (("root", "admin"), ("alice", "member"), ("vic", "viewer"), (HOSTILE_USER, "member")):
        made[name] = secrets.token_urlsafe(15)
        stack.cli("users", "create", name, "--role", role, stdin=made[name] + "\n")
    return made


@pytest.fixture(scope="module")
def browser():
    # Playwright starts Chromium on a fresh, empty profile directory of its own.
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


class Watched:
    """A page in its own browser context, with every dialog and script error it raised."""

    def __init__(self, browser, viewport=None):
        self.context = browser.new_context(viewport=viewport or {"width": 1280, "height": 800},
                                           accept_downloads=True)
        self.page = self.context.new_page()
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        # A refused request is logged by Chromium as a console error; a script's error is not that.
        self.page.on("console", lambda m: m.type == "error" and "Failed to load resource" not in m.text
                     and self.errors.append(m.text))

    def sign_in(self, stack, name, password):
        self.page.goto(stack.control_plane_url + "/")
        self.page.get_by_label("Name").fill(name)
        self.page.get_by_label("Password").fill(password)
        self.page.get_by_role("button", name="Sign in").click()
        self.page.get_by_test_id("who").wait_for()
        return self.page

    def close(self):
        assert self.dialogs == [], f"a dialog opened: {self.dialogs}"
        assert self.errors == [], f"script errors: {self.errors}"
        self.context.close()


def key_names(page) -> list[str]:
    page.get_by_test_id("keys").wait_for()
    return page.locator("[data-testid=keys] tbody tr td:first-child").all_inner_texts()


def test_a_key_shows_its_secret_once_and_the_secret_calls_through_envoy(stack, people, browser):
    w = Watched(browser)
    page = w.sign_in(stack, "root", people["root"])
    assert page.get_by_test_id("who").inner_text() == "root (admin)"

    page.get_by_role("link", name="Keys").click()
    page.get_by_label("Name", exact=True).fill(HOSTILE_KEY)
    page.get_by_role("button", name="Create key").click()
    secret = page.get_by_test_id("secret").inner_text().strip()
    assert secret.startswith("tg-")
    # The hostile name is text in the table, not an element.
    assert HOSTILE_KEY in key_names(page)
    assert page.locator("[data-testid=keys] img").count() == 0
    page.reload()
    assert HOSTILE_KEY in key_names(page)
    page.screenshot(path=str(SCREENSHOTS / "keys.png"), full_page=True)
    assert secret not in page.content(), "the secret is shown again after a reload"

    status, headers, body = request("POST", stack.gateway_url + "/v1/chat/completions",
                                    {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello there"}]},
                                    headers={"authorization": f"Bearer {secret}"})
    assert status == 200, body
    stored = stack.usage(headers["x-tollgate-request-id"])
    assert stored["key_id"] == stack.key_id(HOSTILE_KEY)
    w.close()


def test_a_member_sees_only_their_own_keys(stack, people, browser):
    stack.create_key("alice-key", user="alice")
    stack.create_key("root-key", user="root")
    w = Watched(browser)
    page = w.sign_in(stack, "alice", people["alice"])
    page.get_by_role("link", name="Keys").click()
    assert key_names(page) == ["alice-key"]
    w.close()


def test_a_viewer_sees_no_write_controls_and_the_api_refuses_their_writes(stack, people, browser):
    stack.create_key("seen-by-viewer", user="root")
    w = Watched(browser, viewport={"width": 390, "height": 844})
    page = w.sign_in(stack, "vic", people["vic"])
    page.get_by_role("link", name="Keys").click()
    assert "seen-by-viewer" in key_names(page)
    for control in ("Create key", "Revoke", "Rotate"):
        assert page.get_by_role("button", name=control).count() == 0, control
    status = page.evaluate("""async () => {
        const csrf = document.cookie.split('; ').find(c => c.startsWith('tollgate_csrf=')).split('=')[1];
        const r = await fetch('/api/keys', {method: 'POST', headers: {'content-type': 'application/json',
            'x-csrf-token': decodeURIComponent(csrf)}, body: JSON.stringify({name: 'sneaky'})});
        return r.status;
    }""")
    assert status == 403
    assert "sneaky" not in stack.cli("keys", "list", "--json")
    w.close()


def test_a_hostile_user_name_is_shown_as_text(stack, people, browser):
    w = Watched(browser)
    page = w.sign_in(stack, HOSTILE_USER, people[HOSTILE_USER])
    assert page.get_by_test_id("who").inner_text() == f"{HOSTILE_USER} (member)"
    assert page.locator("header script").count() == 0
    w.close()

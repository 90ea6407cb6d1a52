"""The dashboard in real headless Chromium (Debian's, driven by Playwright), served by the
real control plane in front of the real Envoy: sign-in, keys whose secret shows once and
calls through Envoy, a metered call in the usage table at its exact cost and in the
overview, the CSV download equal to the table, what members and viewers may see and do,
and hostile names shown as text with no script run."""

from __future__ import annotations

import json
import secrets
from decimal import Decimal
from pathlib import Path

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


def exact_dollars(picos: int) -> str:
    """Pico-dollars as the dashboard writes money: exact, trailing zeros dropped, at least cents."""
    whole, _, fraction = f"{Decimal(picos) / Decimal(10**12):.12f}".partition(".")
    return f"${whole}.{fraction.rstrip('0').ljust(2, '0')}"


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


def test_a_call_is_in_the_usage_table_at_its_exact_cost_and_in_the_overview(stack, people, browser):
    key = stack.create_key("usage-key", user="root")
    status, headers, body = request("POST", stack.gateway_url + "/v1/chat/completions",
                                    {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello there"}]},
                                    headers={"authorization": f"Bearer {key}"})
    assert status == 200, body
    request_id = headers["x-tollgate-request-id"]
    usage = json.loads(body)["usage"]
    inp, out, _, _ = PRICES["gpt-4o-mini"]
    # Micro-dollars per 1M tokens times tokens: pico-dollars.
    picos = usage["prompt_tokens"] * round(inp * 1e6) + usage["completion_tokens"] * round(out * 1e6)
    assert stack.usage(request_id)["cost_picos"] == picos

    w = Watched(browser)
    page = w.sign_in(stack, "root", people["root"])
    page.get_by_role("link", name="Usage").click()
    page.get_by_label("key").fill(stack.key_id("usage-key"))
    page.get_by_role("button", name="Filter").click()
    row = page.locator(f"[data-testid=calls] tr[data-request-id='{request_id}']")
    row.wait_for()
    assert row.get_by_test_id("cost").inner_text() == exact_dollars(picos)
    cells = row.locator("td").all_inner_texts()
    assert str(usage["prompt_tokens"]) in cells and str(usage["completion_tokens"]) in cells
    page.get_by_label("key").fill("")
    page.get_by_role("button", name="Filter").click()
    page.get_by_test_id("calls").wait_for()
    page.screenshot(path=str(SCREENSHOTS / "usage.png"), full_page=True)

    # The overview sums every call of the stack's day, this one among them.
    page.get_by_role("link", name="Overview").click()
    page.get_by_role("button", name="24h").click()
    page.get_by_test_id("spend-chart").wait_for()
    stored = stack.cli("usage", "list", "--limit", "1000", "--json").splitlines()
    everything = sum(json.loads(line)["cost_picos"] for line in stored)
    assert page.get_by_test_id("total-spend").inner_text() == exact_dollars(everything)
    page.screenshot(path=str(SCREENSHOTS / "overview.png"), full_page=True)
    w.close()


def test_the_csv_download_holds_the_tables_rows(stack, people, browser):
    key = stack.create_key("csv-key", user="root")
    for _ in range(2):
        status, _, body = request("POST", stack.gateway_url + "/v1/chat/completions",
                                  {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
                                  headers={"authorization": f"Bearer {key}"})
        assert status == 200, body
    key_id = stack.key_id("csv-key")
    w = Watched(browser)
    page = w.sign_in(stack, "root", people["root"])
    page.get_by_role("link", name="Usage").click()
    page.get_by_label("key").fill(key_id)
    page.get_by_role("button", name="Filter").click()
    rows = page.locator("[data-testid=calls] tbody tr")
    rows.first.wait_for()
    shown = sorted(rows.evaluate_all("rs => rs.map(r => r.dataset.requestId)"))
    with page.expect_download() as download:
        page.get_by_role("link", name="Download CSV").click()
    lines = Path(download.value.path()).read_text().splitlines()
    header = lines[0].split(",")
    ids = sorted(line.split(",")[header.index("request_id")] for line in lines[1:])
    assert len(shown) == 2 and ids == shown
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

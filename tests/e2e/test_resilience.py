"""How the gateway behaves when the control plane goes away and comes back."""

from __future__ import annotations

import json

import pytest

from conftest import PRICES
from tests.harness.stack import Provider, Stack, request

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "still there?"}]}


@pytest.fixture
def own_stack(tmp_path):
    # Its own stack: stopping the shared control plane would disturb the other tests.
    s = Stack(workdir=tmp_path, providers=[Provider("alpha", {"gpt-4o-mini": PRICES["gpt-4o-mini"]})],
              key_cache_ttl_ms=60_000, filter_settings={"unknown_key_cache_ms": 10_000},
              # Unknown keys are remembered per worker; one worker makes the test deterministic.
              envoy_concurrency=1)
    s.start()
    yield s
    s.stop()


def call(stack, key):
    return request("POST", stack.gateway_url + "/v1/chat/completions", BODY,
                   {"authorization": f"Bearer {key}"})


def test_control_plane_outage(own_stack):
    s = own_stack
    cached = s.create_key("cached")
    uncached = s.create_key("uncached")
    invented = "tg-" + "7" * 48
    assert call(s, cached)[0] == 200
    assert call(s, invented)[0] == 401

    s.stop_control_plane()

    # A key found unknown moments ago is refused from the filter's memory: retrying an
    # invented key costs the control plane nothing (here it is not even running).
    status, _, data = call(s, invented)
    assert status == 401, data

    # A key never seen cannot be checked: refused (fail closed), with an OpenAI-style 503.
    status, _, data = call(s, uncached)
    assert status == 503
    assert json.loads(data)["error"]["type"] == "api_error"

    # A cached key keeps working; its usage waits in the filter's outbox.
    status, headers, _ = call(s, cached)
    assert status == 200
    during_outage = headers["x-tollgate-request-id"]

    s.start_control_plane()
    # Retried after the control plane is back, and stored exactly once.
    row = s.usage(during_outage, timeout=15)
    assert row["status"] == 200 and row["output"] > 0
    assert call(s, uncached)[0] == 200

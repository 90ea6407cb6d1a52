"""Exact prompt counting before admission: only in the counting build of the filter."""

from __future__ import annotations

import json

import pytest

from conftest import PRICES
from tests.harness import stack as harness
from tests.harness.stack import Provider, Stack, request


def test_counting_build_counts_prompts_exactly(tmp_path):
    s = Stack(workdir=tmp_path, providers=[Provider("alpha", {"gpt-4o-mini": PRICES["gpt-4o-mini"]})],
              filter_settings={"count_prompt_tokens": True})
    s.start()
    try:
        assert str(harness.WASM_COUNT) in s.render_envoy()
        key = s.create_key("counting")
        body = {"model": "gpt-4o-mini", "messages": [{"role": "system", "content": "Count me exactly."},
                                                     {"role": "user", "content": "How many tokens is this?"}]}
        status, _, data = request("POST", s.gateway_url + "/v1/chat/completions", body,
                                  {"authorization": f"Bearer {key}"})
        assert status == 200
        reported = json.loads(data)["usage"]["prompt_tokens"]
        # Without usage from the provider, the count made before admission is what is stored.
        status, headers, _ = request("POST", s.gateway_url + "/v1/chat/completions", body,
                                     {"authorization": f"Bearer {key}", "x-offline-fault": "no-usage"})
        assert status == 200
        row = s.usage(headers["x-tollgate-request-id"])
        assert row["estimated"] and row["input_uncached"] == reported
    finally:
        s.stop()


def test_default_build_refuses_to_count(tmp_path):
    s = Stack(workdir=tmp_path, providers=[Provider("alpha", {"gpt-4o-mini": PRICES["gpt-4o-mini"]})],
              filter_settings={"count_prompt_tokens": True})
    # Point the counting setting at the default build: plugin start must fail, naming why.
    original = harness.WASM_COUNT
    harness.WASM_COUNT = harness.WASM
    try:
        with pytest.raises((RuntimeError, TimeoutError)):
            s.start()
        log = (tmp_path / "envoy.log").read_text()
        assert "count_prompt_tokens" in log and "tollgate_filter_count.wasm" in log
    finally:
        harness.WASM_COUNT = original
        s.stop()

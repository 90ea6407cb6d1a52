"""Every provider format x streamed or not x cached tokens or not: the stored usage row
equals what the provider reported, to the token, and its cost to the pico-dollar.

The expected row is computed here, independently of the gateway's Rust code, from the
usage object the offline provider says it sent (its `/_offline/requests` record) and the
mapping table in core/tests/fixtures/README.md.
"""

from __future__ import annotations

import json

import pytest

from conftest import PRICES, provider_saw
from tests.harness.stack import request

# (provider, model)
PROVIDERS = [
    ("alpha", "gpt-4o"),
    ("beta", "llama-3.1-8b"),
    ("claude", "claude-sonnet"),
    ("gemini", "gemini-2.5-flash"),
    ("deepseek", "deepseek-chat"),
    ("grok", "grok-4-fast"),
]


def normalize(provider: str, u: dict) -> dict:
    """The provider's own usage object, mapped to every column the store keeps:
    (uncached, cache read, cache write, output, reasoning)."""
    if provider == "claude":
        return {"input_uncached": u["input_tokens"], "cache_read": u["cache_read_input_tokens"],
                "cache_write": u["cache_creation_input_tokens"], "output": u["output_tokens"],
                "reasoning": u.get("output_tokens_details", {}).get("thinking_tokens", 0)}
    reasoning = u.get("completion_tokens_details", {}).get("reasoning_tokens", 0)
    if provider == "deepseek":
        return {"input_uncached": u["prompt_cache_miss_tokens"], "cache_read": u["prompt_cache_hit_tokens"],
                "cache_write": 0, "output": u["completion_tokens"], "reasoning": reasoning}
    details = u.get("prompt_tokens_details", {})
    cached, written = details.get("cached_tokens", 0), details.get("cache_write_tokens", 0)
    out = u["completion_tokens"]
    if provider == "gemini":  # thinking is only in total_tokens
        reasoning = u["total_tokens"] - u["prompt_tokens"] - u["completion_tokens"]
        out += reasoning
    if provider == "grok":  # reasoning is outside completion_tokens, inside total_tokens
        out += reasoning
        assert u["total_tokens"] == u["prompt_tokens"] + out
    return {"input_uncached": u["prompt_tokens"] - cached - written, "cache_read": cached,
            "cache_write": written, "output": out, "reasoning": reasoning}


def cost_picos(model: str, row: dict) -> int:
    inp, out, cread, cwrite = (round(p * 1_000_000) for p in PRICES[model])
    return (row["input_uncached"] * inp + row["cache_read"] * cread + row["cache_write"] * cwrite
            + row["output"] * out)


def call(stack, key, model, stream, cached, reasoning):
    body = {"model": model, "stream": stream,
            "messages": [{"role": "system", "content": "You are terse."},
                         {"role": "user", "content": f"Tell me about metering ({model}, stream={stream})"}]}
    headers = {"authorization": f"Bearer {key}"}
    if cached:
        headers.update({"x-offline-cached-tokens": str(cached), "x-offline-cache-write-tokens": "2",
                        "x-offline-reasoning-tokens": str(reasoning)})
    status, resp_headers, data = request("POST", stack.gateway_url + "/v1/chat/completions", body, headers)
    assert status == 200, data[:500]
    return resp_headers["x-tollgate-request-id"], data


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("cached", [0, 6], ids=["uncached", "cached"])
@pytest.mark.parametrize("provider,model", PROVIDERS, ids=[p for p, _ in PROVIDERS])
def test_stored_usage_equals_provider_report(stack, key, provider, model, stream, cached):
    request_id, data = call(stack, key, model, stream, cached, reasoning=3 if cached else 0)
    reported = provider_saw(stack, provider, request_id)["usage"]
    assert reported, f"{provider} reported no usage"
    expected = normalize(provider, reported)
    if cached:
        assert expected["cache_read"] == cached, "the provider should report the cached tokens asked for"
        assert expected["reasoning"] == 3, "the provider should report the reasoning tokens asked for"
    row = stack.usage(request_id)
    got = {k: row[k] for k in expected}
    assert got == expected
    assert not row["estimated"] and not row["partial"]
    assert row["provider"] == provider and row["model"] == model
    assert row["cost_picos"] == cost_picos(model, row)
    if stream:
        # What the client got is a well-formed OpenAI stream ending in [DONE] ...
        assert data.rstrip().endswith(b"data: [DONE]")
        # ... and, as it did not ask for usage, it sees none where the gateway asked for it
        # (OpenAI-style providers, xAI) or translated (Anthropic). DeepSeek and Gemini send
        # usage on the finish chunk unasked, and the client gets exactly that.
        if provider in ("alpha", "beta", "claude", "grok"):
            assert b'"usage"' not in data
        else:
            assert b'"usage"' in data


def test_gemini_thinking_is_billed_as_output(stack, key):
    request_id, _ = call(stack, key, "gemini-2.5-flash", False, cached=6, reasoning=3)
    row = stack.usage(request_id)
    reported = provider_saw(stack, "gemini", request_id)["usage"]
    assert row["output"] == reported["completion_tokens"] + 3
    assert row["reasoning"] == 3


def test_anthropic_cache_writes_are_priced_apart(stack, key):
    request_id, _ = call(stack, key, "claude-sonnet", True, cached=6, reasoning=0)
    row = stack.usage(request_id)
    assert row["cache_write"] == 2 and row["cache_read"] == 6
    assert row["cost_picos"] == cost_picos("claude-sonnet", row)


def test_embeddings_and_completions_are_metered(stack, key):
    status, headers, data = request("POST", stack.gateway_url + "/v1/embeddings",
                                    {"model": "text-embedding-3-small", "input": ["one two", "three"]},
                                    {"authorization": f"Bearer {key}"})
    assert status == 200, data
    row = stack.usage(headers["x-tollgate-request-id"])
    assert row["input_uncached"] == json.loads(data)["usage"]["prompt_tokens"] > 0
    assert row["output"] == 0

    status, headers, data = request("POST", stack.gateway_url + "/v1/completions",
                                    {"model": "gpt-3.5-turbo-instruct", "prompt": "Say this is a test"},
                                    {"authorization": f"Bearer {key}"})
    assert status == 200, data
    usage = json.loads(data)["usage"]
    row = stack.usage(headers["x-tollgate-request-id"])
    assert (row["input_uncached"], row["output"]) == (usage["prompt_tokens"], usage["completion_tokens"])

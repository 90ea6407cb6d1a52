"""One Tollgate stack for the whole end-to-end session: offline providers speaking each
provider's wire format, the control plane on SQLite, and the real Envoy running the
built filter."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.harness.stack import Provider, Stack  # noqa: E402

# USD per 1M tokens: input, output, cache read, cache write.
PRICES = {
    "gpt-4o-mini": (0.15, 0.6, 0.075, 0.0),
    "gpt-4o": (2.5, 10.0, 1.25, 0.0),
    "gpt-3.5-turbo-instruct": (1.5, 2.0, 0.0, 0.0),
    "text-embedding-3-small": (0.02, 0.0, 0.0, 0.0),
    "llama-3.1-8b": (0.05, 0.08, 0.0, 0.0),
    "claude-sonnet": (3.0, 15.0, 0.3, 3.75),
    "gemini-2.5-flash": (0.3, 2.5, 0.075, 0.0),
    "deepseek-chat": (0.27, 1.1, 0.07, 0.0),
    "grok-4-fast": (0.2, 0.5, 0.05, 0.0),
    "slow-model": (1.0, 1.0, 0.0, 0.0),
    "ghost-model": (1.0, 1.0, 0.0, 0.0),
}
ALPHA_KEY = "sk-alpha-provider-secret-0001"
ANTHROPIC_KEY = "sk-ant-offline-0002"
GEMINI_KEY = "gemini-offline-0003"
DEEPSEEK_KEY = "sk-deepseek-offline-0004"
XAI_KEY = "xai-offline-0005"
CLAUDE_UPSTREAM = "claude-sonnet-4-5-20250929"
KEY_CACHE_TTL_MS = 1000
SLOW_TIMEOUT_MS = 500


def priced(*models: str) -> dict:
    return {m: PRICES[m] for m in models}


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    s = Stack(
        workdir=tmp_path_factory.mktemp("stack"),
        providers=[
            Provider("alpha", priced("gpt-4o-mini", "gpt-4o", "gpt-3.5-turbo-instruct", "text-embedding-3-small"),
                     kind="openai", api_key=ALPHA_KEY),
            Provider("beta", priced("llama-3.1-8b"), kind="openai_compatible"),
            Provider("claude", priced("claude-sonnet"), kind="anthropic", api_key=ANTHROPIC_KEY,
                     upstream_models={"claude-sonnet": CLAUDE_UPSTREAM}),
            Provider("gemini", priced("gemini-2.5-flash"), kind="gemini", api_key=GEMINI_KEY),
            Provider("deepseek", priced("deepseek-chat"), kind="deepseek", api_key=DEEPSEEK_KEY),
            Provider("grok", priced("grok-4-fast"), kind="xai", api_key=XAI_KEY),
            Provider("slowpoke", priced("slow-model"), kind="openai", timeout_ms=SLOW_TIMEOUT_MS),
            Provider("ghost", priced("ghost-model"), kind="openai", start=False),
        ],
        key_cache_ttl_ms=KEY_CACHE_TTL_MS,
    )
    s.start()
    print(f"\nenvoy ready {s.envoy_ready_seconds:.3f}s after start", file=sys.stderr)
    yield s
    s.stop()


@pytest.fixture(scope="session")
def key(stack):
    """A key allowed every model."""
    return stack.create_key("e2e-all-models")


def provider_saw(stack, provider: str, request_id: str) -> dict:
    """What the offline provider recorded for the request with this gateway id."""
    import json

    from tests.harness.stack import request

    _, _, seen = request("GET", stack.provider_url(provider) + "/_offline/requests")
    matches = [s for s in json.loads(seen) if s["request_id"] == request_id]
    assert len(matches) == 1, f"provider {provider} saw {len(matches)} requests with id {request_id}"
    return matches[0]

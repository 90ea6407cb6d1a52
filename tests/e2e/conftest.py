"""One Tollgate stack for the whole end-to-end session: two offline providers, the
control plane on SQLite, and the real Envoy running the built filter."""

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
    "claude-sonnet": (3.0, 15.0, 0.3, 3.75),
}
ALPHA_KEY = "sk-alpha-provider-secret-0001"
KEY_CACHE_TTL_MS = 1000


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    s = Stack(
        workdir=tmp_path_factory.mktemp("stack"),
        providers=[
            Provider("alpha", {m: PRICES[m] for m in ("gpt-4o-mini", "gpt-4o")}, api_key=ALPHA_KEY),
            Provider("beta", {"claude-sonnet": PRICES["claude-sonnet"]}),
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

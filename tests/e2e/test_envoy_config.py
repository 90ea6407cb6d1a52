"""The Envoy configurations the harness renders are valid for the real Envoy, including the
ones no other test starts: TLS clusters to real providers (the demo with OPENAI_API_KEY)
and the bare variant benchmarks compare against."""

from __future__ import annotations

import subprocess

import pytest

from conftest import PRICES
from tests.harness.stack import Provider, Stack, envoy_bin


@pytest.mark.parametrize("with_filter", [True, False], ids=["tollgate", "bare"])
def test_rendered_config_validates(tmp_path, with_filter):
    s = Stack(workdir=tmp_path, with_filter=with_filter,
              providers=[Provider("openai", {"gpt-4o-mini": PRICES["gpt-4o-mini"]}, api_key="unused",
                                  remote="api.openai.com:443"),
                         Provider("local", {"llama-3.1-8b": PRICES["llama-3.1-8b"]}, port=9, start=False)],
              gateway_port=10000, http_port=8080, grpc_port=50051, admin_port=9901)
    text = s.render_envoy()
    assert ("envoy.filters.http.wasm" in text) == with_filter
    assert "trusted_ca" in text and "api.openai.com" in text
    path = tmp_path / "envoy.yaml"
    path.write_text(text)
    out = subprocess.run([envoy_bin(), "--mode", "validate", "-c", str(path)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "OK" in out.stdout

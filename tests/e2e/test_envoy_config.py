"""The Envoy configurations `tollgate envoy-config` renders are valid for the real Envoy:
every example under examples/ (a new example is covered by being there), with and without
the filter, and the harness's own, including TLS clusters no other test starts."""

from __future__ import annotations

import os
import stat
import subprocess
import tomllib
from urllib.parse import urlsplit

import pytest

from conftest import PRICES
from tests.harness import stack as harness
from tests.harness.stack import Provider, Stack, envoy_bin

EXAMPLES = sorted((harness.ROOT / "examples").glob("*.toml"))
TOKEN = "t" * 40


def envoy_validate(path) -> None:
    out = subprocess.run([envoy_bin(), "--mode", "validate", "-c", str(path)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "OK" in out.stdout


def example_env(config: dict) -> dict:
    """The variables an example names, set to stand-ins: rendering reads every one."""
    env = os.environ.copy()
    env[config.get("server", {}).get("filter_token_env", "TOLLGATE_FILTER_TOKEN")] = TOKEN
    for p in config["providers"]:
        if "api_key_env" in p:
            env[p["api_key_env"]] = "sk-stand-in"
    return env


def test_there_are_examples():
    names = {p.name for p in EXAMPLES}
    assert {"openai.toml", "multi-provider.toml", "offline.toml"} <= names, names


@pytest.mark.parametrize("with_filter", [True, False], ids=["tollgate", "bare"])
@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_renders_and_validates(tmp_path, example, with_filter):
    config = tomllib.loads(example.read_text())
    out = tmp_path / "envoy.yaml"
    argv = [str(harness.native_bin("tollgate")), "--config", str(example), "envoy-config",
            "--output", str(out), *([] if with_filter else ["--without-filter"])]
    run = subprocess.run(argv, env=example_env(config), capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600, "the file may hold the token: owner only"
    text = out.read_text()

    assert ("envoy.filters.http.wasm" in text) == with_filter
    assert ("json_to_metadata" in text) == with_filter
    assert (TOKEN in text) == with_filter
    route_header = config.get("envoy", {}).get("filter", {}).get("route_header", "x-tollgate-provider")
    assert f"cluster_header: {route_header}\n" in text
    for p in config["providers"]:
        url = urlsplit(p["url"])
        assert f"- name: {p['name']}\n" in text
        if url.scheme == "https":
            assert f"sni: {url.hostname}\n" in text
            assert f"exact: {url.hostname}\n" in text
    envoy_validate(out)


@pytest.mark.parametrize("with_filter", [True, False], ids=["tollgate", "bare"])
def test_harness_config_validates(tmp_path, with_filter):
    s = Stack(workdir=tmp_path, with_filter=with_filter,
              providers=[Provider("openai", {"gpt-4o-mini": PRICES["gpt-4o-mini"]}, api_key="unused",
                                  remote="api.openai.com:443"),
                         Provider("local", {"llama-3.1-8b": PRICES["llama-3.1-8b"]}, port=9, start=False)],
              gateway_port=10000, http_port=8080, grpc_port=50051, admin_port=9901,
              filter_settings={"route_header": "x-route", "metadata_namespace": "meter"})
    text = s.render_envoy()
    assert ("envoy.filters.http.wasm" in text) == with_filter
    assert "trusted_ca" in text and "sni: api.openai.com" in text
    assert "cluster_header: x-route\n" in text
    assert ("metadata_namespace: meter\n" in text) == with_filter
    path = tmp_path / "envoy.yaml"
    path.write_text(text)
    envoy_validate(path)


def test_a_bad_setting_is_refused_by_name(tmp_path):
    s = Stack(workdir=tmp_path, providers=[Provider("local", {"m": (0, 0, 0, 0)}, port=9, start=False)],
              gateway_port=10000, http_port=8080, grpc_port=50051, admin_port=9901,
              filter_settings={"max_body_bytez": 1})
    with pytest.raises(RuntimeError, match="max_body_bytez"):
        s.render_envoy()


@pytest.mark.parametrize("url", [
    "HTTPS://API.OpenAI.com",      # scheme and host are case-insensitive
    "https://[2001:db8::1]:8443",  # an IPv6 literal: IP SAN, no SNI
    "https://bücher.example",      # IDN: dialed and checked as its punycode
    "http://10.0.0.12:8000",
], ids=["uppercase", "ipv6", "idn", "ipv4"])
def test_unusual_provider_urls_render_files_envoy_accepts(tmp_path, url):
    # Envoy's validation loads the filter: the real build, beside the config.
    (tmp_path / "f.wasm").write_bytes(harness.WASM.read_bytes())
    config = tmp_path / "tollgate.toml"
    config.write_text(f'[envoy]\nwasm = "f.wasm"\n[[providers]]\nname = "p"\nurl = "{url}"\n'
                      '[[models]]\nname = "m"\nprovider = "p"\nfree = true\n')
    out = tmp_path / "envoy.yaml"
    run = subprocess.run([str(harness.native_bin("tollgate")), "--config", str(config), "envoy-config",
                          "--output", str(out)], env={**os.environ, "TOLLGATE_FILTER_TOKEN": TOKEN},
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    text = out.read_text()
    assert f"filename: {tmp_path / 'f.wasm'}\n" in text, "a relative wasm path is written absolute"
    envoy_validate(out)


def test_check_config_refuses_what_envoy_config_refuses(tmp_path):
    config = tmp_path / "tollgate.toml"
    config.write_text('[[providers]]\nname = "tollgate_control_plane"\nurl = "http://127.0.0.1:9"\n'
                      '[[models]]\nname = "m"\nprovider = "tollgate_control_plane"\nfree = true\n')
    env = {**os.environ, "TOLLGATE_FILTER_TOKEN": TOKEN}
    for command in (["check-config"], ["envoy-config", "--without-filter"]):
        run = subprocess.run([str(harness.native_bin("tollgate")), "--config", str(config), *command],
                             env=env, capture_output=True, text=True, timeout=60)
        assert run.returncode != 0, command
        assert "envoy.filter.control_plane_cluster" in run.stderr, (command, run.stderr)
        assert TOKEN not in run.stderr + run.stdout

"""The manifests run: the control plane's tollgate.toml and the sidecar's Envoy bootstrap,
taken from the ConfigMaps `kubectl kustomize` renders, with only their addresses made
local, start the real control plane and the real Envoy (with each container's arguments),
Envoy fetches the filter from the control plane pinned by its SHA-256 as in the cluster,
and a completion through it is metered. The sidecar in the cluster runs these bytes."""

from __future__ import annotations

import json
import secrets
import subprocess

import pytest
import yaml

from deploy_manifests import DEPLOY, find
from local_run import (Processes, base_env, http_ok, rewrite_bootstrap, rewrite_toml,
                       wait_until)
from tests.harness.stack import (WASM, envoy_bin, free_port, native_bin, request)

PROVIDER_KEY = "sk-offline-provider-key-for-the-manifests"


@pytest.fixture
def procs(tmp_path):
    running = Processes(tmp_path)
    yield running
    running.stop_all()


def container(deployment: dict, name: str) -> dict:
    spec = deployment["spec"]["template"]["spec"]
    return next(c for c in [*spec.get("initContainers", []), *spec["containers"]]
                if c["name"] == name)


def test_the_rendered_config_maps_serve_a_metered_completion(rendered, procs, tmp_path):
    single = rendered["overlays/single"]
    sidecar = rendered["examples/sidecar"]
    config_map = find(single, "ConfigMap", "tollgate-config")
    control_plane = container(find(single, "Deployment", "tollgate"), "tollgate")
    app = find(sidecar, "Deployment", "demo-app")
    envoy = container(app, "envoy")
    bootstrap = yaml.safe_load(find(sidecar, "ConfigMap", "demo-app-envoy")["data"]["envoy.yaml"])

    ports = {name: free_port() for name in ("grpc", "http", "provider", "listener", "admin")}
    provider = procs.start("provider", [str(native_bin("tollgate-offline-provider")), "--listen",
                                        f"127.0.0.1:{ports['provider']}", "--name", "openai",
                                        "--dialect", "openai"],
                           base_env(OFFLINE_PROVIDER_API_KEY=PROVIDER_KEY))
    wait_until("offline provider", lambda: http_ok(
        f"http://127.0.0.1:{ports['provider']}/_offline/health"), procs=procs)
    assert provider.poll() is None

    # The control plane: the ConfigMap's file at its mount path's name, addresses local;
    # the filter builds where this machine keeps them (the image's /filter).
    config_path = tmp_path / "tollgate.toml"
    config_path.write_text(rewrite_toml(config_map["data"]["tollgate.toml"], {
        'grpc_listen = "0.0.0.0:50051"': json.dumps(f"127.0.0.1:{ports['grpc']}"),
        'http_listen = "0.0.0.0:8080"': json.dumps(f"127.0.0.1:{ports['http']}"),
        'url = "https://api.openai.com"': json.dumps(f"http://127.0.0.1:{ports['provider']}"),
        'filter_dir = "/filter"': json.dumps(str(WASM.parent)),
    }))
    database = {e["name"]: e["value"] for e in control_plane["env"] if "value" in e}
    assert database["TOLLGATE_DATABASE_URL"] == "sqlite:///var/lib/tollgate/tollgate.db"
    # The Secret tollgate-secrets as the README creates it: every key of the example, each
    # secret `openssl rand -hex 32`, the provider's key the offline provider demands.
    example = yaml.safe_load((DEPLOY / "base" / "secret.example.yaml").read_text())
    secret = {name: secrets.token_hex(32) for name in example["stringData"]}
    secret["OPENAI_API_KEY"] = PROVIDER_KEY
    filter_token = secret["TOLLGATE_FILTER_TOKEN"]
    cp_env = base_env(**secret, TOLLGATE_DATABASE_URL=f"sqlite://{tmp_path}/data/tollgate.db")
    args = [str(config_path) if a == "/etc/tollgate/tollgate.toml" else a
            for a in control_plane["args"]]
    procs.start("control-plane", [str(native_bin("tollgate")), *args], cp_env)
    wait_until("control plane ready", lambda: http_ok(f"http://127.0.0.1:{ports['http']}/readyz"),
               procs=procs)

    # The sidecar: the ConfigMap's bootstrap, addresses local; its environment holds the
    # filter token and nothing else of the control plane's.
    local = rewrite_bootstrap(bootstrap, {
        "listener": ports["listener"], "admin": ports["admin"],
        "tollgate_control_plane": ports["grpc"], "tollgate_filter_source": ports["http"],
        "openai": ports["provider"]})
    envoy_config = tmp_path / "envoy.yaml"
    envoy_config.write_text(yaml.safe_dump(local))
    args = [str(envoy_config) if a == "/etc/envoy/envoy.yaml" else a for a in envoy["args"]]
    assert str(envoy_config) in args
    procs.start("envoy", [envoy_bin(), *args], base_env(TOLLGATE_FILTER_TOKEN=filter_token))
    admin = f"http://127.0.0.1:{ports['admin']}"
    wait_until("envoy live", lambda: http_ok(f"{admin}/ready", b"LIVE"), procs=procs)

    def stat(name: str) -> int:
        _, _, body = request("GET", f"{admin}/stats?filter=^{name}$")
        return int(body.decode().split(":")[1]) if body.strip() else 0

    wait_until("the filter fetched from the control plane",
               lambda: stat("wasm.remote_load_fetch_successes") == 1, procs=procs)
    assert stat("wasm.remote_load_fetch_failures") == 0

    # The application's call, as the demo app makes it: a Tollgate key, never the provider's.
    cli = [str(native_bin("tollgate")), "--config", str(config_path)]
    made = subprocess.run([*cli, "keys", "create", "--name", "demo-app", "--quiet"], env=cp_env,
                          capture_output=True, text=True, timeout=60, check=True)
    key = made.stdout.strip()
    app_env = {e["name"]: e.get("value") for e in container(app, "app")["env"]}
    base_url = app_env["OPENAI_BASE_URL"].replace("localhost:10000", f"127.0.0.1:{ports['listener']}")
    try:
        status, headers, data = request(
            "POST", base_url + "/chat/completions",
            {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello"}]},
            {"authorization": f"Bearer {key}"})
        assert status == 200, data
        answer = json.loads(data)
        request_id = headers["x-tollgate-request-id"]

        def usage_row():
            out = subprocess.run([*cli, "usage", "list", "--request-id", request_id, "--json"],
                                 env=cp_env, capture_output=True, text=True, timeout=60, check=True)
            return out.stdout.strip()

        row = json.loads(wait_until("the usage record", usage_row))
    except BaseException:
        procs.dump_logs()
        raise
    assert row["model"] == "gpt-4o-mini" and row["provider"] == "openai"
    assert row["input_uncached"] == answer["usage"]["prompt_tokens"] > 0
    assert row["output"] == answer["usage"]["completion_tokens"] > 0
    assert row["cost_picos"] > 0


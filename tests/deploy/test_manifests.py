"""Every kustomization under deploy/ renders, every object it renders is valid for a
current Kubernetes (kubernetes-validate --strict, its bundled schemas), and every pod meets
the restricted Pod Security Standard; a deliberately broken manifest proves the check
can fail."""

from __future__ import annotations

import kubernetes_validate
import pytest
import tomllib
import yaml

from deploy_manifests import DEPLOY, KUSTOMIZATIONS, find, kustomize
from pod_security import pod_spec, violations

# A current release; kubernetes-validate ships its schemas.
KUBERNETES_VERSION = "1.35.0"


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_every_rendered_object_is_valid_kubernetes(rendered, name):
    objects = rendered[name]
    assert objects, name
    for obj in objects:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_the_secret_example_is_valid_and_holds_placeholders_only():
    example = yaml.safe_load((DEPLOY / "base" / "secret.example.yaml").read_text())
    kubernetes_validate.validate(example, KUBERNETES_VERSION, strict=True)
    for key, value in example["stringData"].items():
        assert value.startswith("<replace"), f"{key} holds a value: {value}"
    # Every variable tollgate.toml names has a place in it.
    config = tomllib.loads((DEPLOY / "base" / "tollgate.toml").read_text())
    named = {config["server"]["filter_token_env"],
             *(p["api_key_env"] for p in config["providers"] if "api_key_env" in p)}
    assert named <= set(example["stringData"]), named - set(example["stringData"])


def test_a_strict_check_refuses_an_unknown_field():
    # --strict is what catches a misspelt field, which Kubernetes would drop silently.
    deployment = yaml.safe_load((DEPLOY / "base" / "deployment.yaml").read_text())
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_every_pod_meets_the_restricted_profile(rendered, name):
    pods = [o for o in rendered[name] if pod_spec(o) is not None]
    assert pods, f"{name} runs no pod"
    for obj in pods:
        assert violations(obj) == [], violations(obj)


def test_the_namespace_enforces_the_restricted_profile(rendered):
    namespace = find(rendered["overlays/single"], "Namespace", "tollgate")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_a_broken_manifest_fails_the_profile_check():
    (deployment,) = kustomize(DEPLOY.parent / "tests" / "deploy" / "broken")
    found = "\n".join(violations(deployment))
    for rule in ("host namespaces", "volume types", "privilege escalation", "capabilities",
                 "running as non-root", "seccomp", "readOnlyRootFilesystem",
                 "automountServiceAccountToken", "privileged containers", "adds capabilities"):
        assert rule in found, f"{rule!r} not found in:\n{found}"


def test_overlays_set_replicas_storage_and_disruption_budget(rendered):
    single = find(rendered["overlays/single"], "Deployment", "tollgate")["spec"]
    assert single["replicas"] == 1 and single["strategy"]["type"] == "Recreate"
    volumes = {v["name"]: v for v in single["template"]["spec"]["volumes"]}
    claim = volumes["data"]["persistentVolumeClaim"]["claimName"]
    assert find(rendered["overlays/single"], "PersistentVolumeClaim", claim)
    env = {e["name"]: e for e in single["template"]["spec"]["containers"][0]["env"]}
    assert env["TOLLGATE_DATABASE_URL"]["value"].startswith("sqlite:///var/lib/tollgate/")

    ha = find(rendered["overlays/ha"], "Deployment", "tollgate")["spec"]
    assert ha["replicas"] >= 2
    env = {e["name"]: e for e in ha["template"]["spec"]["containers"][0]["env"]}
    assert "secretKeyRef" in env["TOLLGATE_DATABASE_URL"]["valueFrom"], "the DSN is a secret"
    assert ha["template"]["spec"]["affinity"]["podAntiAffinity"]
    pdb = find(rendered["overlays/ha"], "PodDisruptionBudget", "tollgate")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= ha["template"]["metadata"]["labels"].items()


def test_network_policies_admit_only_sidecars_to_grpc_and_the_ingress_to_http(rendered):
    objects = rendered["overlays/single"]
    policies = [o for o in objects if o["kind"] == "NetworkPolicy"]
    by_port = {}
    for p in policies:
        for rule in p["spec"]["ingress"]:
            for port in rule["ports"]:
                by_port.setdefault(port["port"], []).extend(rule["from"])
    assert set(by_port) == {"grpc", "http"}
    sidecar = {"tollgate.dev/sidecar": "true"}
    assert [f["podSelector"]["matchLabels"] for f in by_port["grpc"]] == [sidecar]
    http_from = [f["podSelector"]["matchLabels"] for f in by_port["http"]]
    assert sidecar in http_from and len(http_from) == 2, http_from
    # The sidecar example's pods carry the label the policies admit.
    app = find(rendered["examples/sidecar"], "Deployment", "demo-app")
    assert app["spec"]["template"]["metadata"]["labels"].items() >= sidecar.items()


def test_the_sidecar_pod_holds_no_provider_key(rendered):
    objects = rendered["examples/sidecar"]
    app = find(objects, "Deployment", "demo-app")["spec"]["template"]["spec"]
    containers = [*app["initContainers"], *app["containers"]]
    assert not any("envFrom" in c for c in containers), "a whole Secret would bring every key"
    secret_keys = {e["valueFrom"]["secretKeyRef"]["key"] for c in containers
                   for e in c.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})}
    assert secret_keys == {"TOLLGATE_FILTER_TOKEN", "key"}, secret_keys
    envoy = next(c for c in app["initContainers"] if c["name"] == "envoy")
    assert envoy["image"].startswith("envoyproxy/envoy:v1.40."), "the stock Envoy image"
    assert envoy["restartPolicy"] == "Always", "a native sidecar, stopped after the app"
    bootstrap = find(objects, "ConfigMap", "demo-app-envoy")["data"]["envoy.yaml"]
    assert "Holds no secret" in bootstrap and "control_plane_token_env" in bootstrap
    assert '"control_plane_token"' not in bootstrap


def test_the_sidecars_admin_interface_is_out_of_the_applications_reach(rendered):
    # The application shares the pod's network: on 127.0.0.1 it could raise Envoy's log
    # level (the router then logs the provider credential the filter adds to each
    # upstream request), read config_dump or stop the sidecar. On a Unix socket in a
    # volume only the envoy container mounts, it cannot even name it.
    objects = rendered["examples/sidecar"]
    bootstrap = yaml.safe_load(find(objects, "ConfigMap", "demo-app-envoy")["data"]["envoy.yaml"])
    address = bootstrap["admin"]["address"]
    assert "socket_address" not in address, address
    socket = address["pipe"]["path"]
    assert address["pipe"]["mode"] == 0o600, address
    app = find(objects, "Deployment", "demo-app")["spec"]["template"]["spec"]
    mounts = {c["name"]: [m["mountPath"] for m in c.get("volumeMounts", [])]
              for c in [*app["initContainers"], *app["containers"]]}
    assert any(socket.startswith(p.rstrip("/") + "/") for p in mounts["envoy"]), mounts
    assert not any(socket.startswith(p.rstrip("/") + "/") for p in mounts["app"]), mounts

"""The image builds from the Containerfile with podman (or docker), as `./dev image` builds
it, and holds what the manifests expect: a static `tollgate` as the entrypoint, run as a
non-root user, and the filter builds the control plane serves."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from deploy_manifests import render_sidecar_bootstrap
from tests.harness.stack import ROOT, WASM

IMAGE = "localhost/tollgate:deploy-test"


def engine() -> str:
    found = shutil.which("podman") or shutil.which("docker")
    assert found, "./dev setup installs podman; neither podman nor docker is here"
    return found


@pytest.fixture(scope="module")
def image():
    built = subprocess.run([str(ROOT / "dev"), "image"], cwd=ROOT, capture_output=True, text=True,
                           timeout=3600, env={**os.environ, "TOLLGATE_IMAGE": IMAGE,
                                                    "TOLLGATE_IMAGE_PROFILE": "image-check"})
    assert built.returncode == 0, built.stderr[-3000:]
    yield IMAGE
    subprocess.run([engine(), "rmi", "-f", IMAGE], capture_output=True, timeout=120)


def test_the_image_runs_tollgate_as_a_non_root_user(image):
    out = subprocess.run([engine(), "image", "inspect", image], capture_output=True, text=True,
                         timeout=60, check=True)
    (info,) = json.loads(out.stdout)
    config = info["Config"]
    assert config["User"] == "65532:65532"
    assert config["Entrypoint"] == ["/tollgate"]
    assert config["Cmd"] == ["serve", "--config", "/etc/tollgate/tollgate.toml"]
    # The Deployment's arguments are the same command, its config at the same path.
    deployment = (ROOT / "deploy" / "base" / "deployment.yaml").read_text()
    assert 'args: ["serve", "--config", "/etc/tollgate/tollgate.toml"]' in deployment


@pytest.fixture(scope="module")
def image_files(image, tmp_path_factory) -> Path:
    """The image's filesystem, exported (a container is created, never run)."""
    root = tmp_path_factory.mktemp("image")
    container = subprocess.run([engine(), "create", image], capture_output=True, text=True,
                               timeout=60, check=True).stdout.strip()
    try:
        exported = subprocess.run([engine(), "export", container], capture_output=True,
                                  timeout=120, check=True).stdout
    finally:
        subprocess.run([engine(), "rm", "-f", container], capture_output=True, timeout=60)
    with tarfile.open(fileobj=io.BytesIO(exported)) as tar:
        tar.extractall(root, filter="data")
    return root


def test_the_image_holds_a_static_binary_and_both_filter_builds(image_files):
    files = {str(p.relative_to(image_files)) for p in image_files.rglob("*") if p.is_file()}
    assert files == {"tollgate", "filter/tollgate_filter.wasm", "filter/tollgate_filter_count.wasm",
                     "etc/ssl/certs/ca-certificates.crt"}, files
    for build in ("tollgate_filter.wasm", "tollgate_filter_count.wasm"):
        assert (image_files / "filter" / build).read_bytes() == (WASM.parent / build).read_bytes()
    binary = image_files / "tollgate"
    # Static: it runs with no loader and no libc in the image.
    assert b"ld-linux" not in binary.read_bytes()[:4096], "a program interpreter: dynamically linked"
    binary.chmod(0o755)
    ran = subprocess.run([str(binary), "--help"], capture_output=True, text=True, timeout=60,
                         env={})
    assert ran.returncode == 0 and "envoy-config" in ran.stdout, ran.stderr


def test_the_image_renders_the_bootstrap_the_tests_ran(image_files, deploy_copy):
    """README step 6 renders the sidecar's bootstrap with the image's binary and filter:
    it is the bootstrap test_manifests_run.py ran, byte for byte."""
    binary = image_files / "tollgate"
    binary.chmod(0o755)
    in_image = render_sidecar_bootstrap(deploy_copy, tollgate=binary,
                                        wasm=image_files / "filter" / "tollgate_filter.wasm")
    assert in_image == (deploy_copy / "examples" / "sidecar" / "envoy.yaml").read_text()

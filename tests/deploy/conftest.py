"""The manifests under deploy/, rendered once per session (see deploy_manifests)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from deploy_manifests import DEPLOY, KUSTOMIZATIONS, kustomize, render_sidecar_bootstrap  # noqa: E402


@pytest.fixture(scope="session")
def deploy_copy(tmp_path_factory) -> Path:
    """deploy/ copied with the sidecar's bootstrap rendered into it, as after the README's
    rendering step (the repository's own deploy/ is left as it is)."""
    copy = tmp_path_factory.mktemp("deploy") / "deploy"
    shutil.copytree(DEPLOY, copy)
    (copy / "examples" / "sidecar" / "envoy.yaml").write_text(render_sidecar_bootstrap(copy))
    return copy


@pytest.fixture(scope="session")
def rendered(deploy_copy) -> dict[str, list[dict]]:
    """Every kustomization's objects, by its path under deploy/."""
    return {name: kustomize(deploy_copy / name) for name in KUSTOMIZATIONS}

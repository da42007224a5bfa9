"""Kubernetes manifests: strict schema validation of core kinds and a kustomize render of the overlay."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

INFRA = Path(__file__).resolve().parents[2] / "infra"


def test_manifests_validate_strict():
    files = sorted(str(p) for p in (INFRA / "k8s" / "base").glob("*.yaml") if p.name != "kustomization.yaml")
    exe = Path(sys.executable).with_name("kubernetes-validate")
    if not exe.exists():
        pytest.skip("kubernetes-validate not installed")
    proc = subprocess.run([str(exe), "--strict", *files], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("passed") + proc.stderr.count("passed") == 6


def test_overlay_renders_with_release_storage():
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl not installed")
    out = subprocess.run(["kubectl", "kustomize", str(INFRA / "k8s" / "overlays" / "h100")],
                         capture_output=True, text=True, check=True).stdout
    assert "storage: 10Ti" in out and "app.kubernetes.io/part-of: sana-wm" in out

"""Every CLI answers a user's input mistake with one ``error:`` line and exit code 3; ``--debug`` shows the
traceback. Real processes, as a user runs them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from model.cli import EXIT_INPUT_ERROR

ROOT = Path(__file__).resolve().parents[1]

# (module, arguments) that name something that is not there, or a malformed value
CASES = [
    ("components.ingest", ["--synthetic", "0", "--out", "{tmp}/raw"]),
    ("components.annotate", ["{tmp}/missing.mp4", "--out", "{tmp}/poses.npz"]),
    ("components.vae", ["--shards", "{tmp}/nope", "--preset", "tiny", "--out", "{tmp}/vae"]),
    ("components.train", ["--shards", "{tmp}/nope", "--preset", "tiny", "--steps", "1", "--out", "{tmp}/m"]),
    ("components.distill", ["--teacher", "{tmp}/nope", "--shards", "{tmp}/nope", "--out", "{tmp}/s"]),
    ("components.quantize", ["--model", "{tmp}/nope", "--shards", "{tmp}/nope", "--out", "{tmp}/q"]),
    ("components.evaluate", ["--model", "{tmp}/nope", "--heldout", "{tmp}/nope", "--out", "{tmp}/e"]),
    ("components.register", ["--model", "{tmp}/nope", "--metrics", "{tmp}/m.json", "--name", "x"]),
    ("components.deploy", ["--model-uri", "runs:/bad", "--repo", "{tmp}/r"]),
    ("model", ["generate", "--bundle", "{tmp}/nope", "--image", "{tmp}/x.png", "--trajectory", "{tmp}/t.npz",
               "-o", "{tmp}/o.mp4"]),
    ("model", ["import", "--diffusers", "{tmp}/nope", "--out", "{tmp}/b"]),
]


def _run(module: str, args: list[str], tmp: Path, *extra: str) -> subprocess.CompletedProcess:
    argv = [a.format(tmp=tmp) for a in args]
    return subprocess.run([sys.executable, "-m", module, *argv, *extra], cwd=ROOT, capture_output=True,
                          text=True, timeout=240, env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1",
                                                       "PYTHONUTF8": "1", "HOME": str(tmp)})


@pytest.mark.parametrize("module,args", CASES, ids=[f"{m} {a[0]}" for m, a in CASES])
def test_input_error_is_one_line_with_its_exit_code(tmp_path, module, args):
    r = _run(module, args, tmp_path)
    assert r.returncode == EXIT_INPUT_ERROR, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1 and "--debug" in lines[0], r.stderr[-2000:]


def test_debug_keeps_the_traceback(tmp_path):
    module, args = CASES[-1]
    r = _run(module, args, tmp_path, "--debug")
    assert r.returncode == 1 and "Traceback" in r.stderr


def test_main_guard_does_not_rebind_a_module_function():
    """`if __name__ == "__main__": from model.cli import run` rebinds any module-level `run` when the module
    is executed with `python -m` (it broke `python -m components.vae` once, while in-process calls passed)."""
    import ast

    offenders = []
    for path in sorted((ROOT / "components").glob("*/__main__.py")) + [ROOT / "model" / "__main__.py"]:
        tree = ast.parse(path.read_text())
        defined = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))}
        for node in tree.body:
            if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test):
                bound = {a.asname or a.name for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom))
                         for a in n.names}
                offenders += [f"{path.relative_to(ROOT)}: {name}" for name in bound & defined]
    assert not offenders, offenders

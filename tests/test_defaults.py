"""params.yaml is the one source of defaults: the DAG's parameters and the step CLIs agree with it, and
every CLI option has help text (``--help`` shows the defaults)."""

from __future__ import annotations

import argparse
import importlib

import pytest

from components.common.defaults import default

# (module, option dest) -> params.yaml key
CLI_DEFAULTS = {
    ("components.train", "steps"): "train.steps",
    ("components.distill", "ode_steps"): "distill.ode_steps",
    ("components.distill", "dmd_steps"): "distill.dmd_steps",
    ("components.distill", "teacher_steps"): "distill.teacher_steps",
    ("components.evaluate", "num_clips"): "evaluate.num_clips",
    ("components.vae", "lr"): "vae.lr",
    ("components.deploy", "device"): "deploy.device",
    ("components.deploy", "instance_count"): "deploy.instance_count",
    ("components.deploy", "max_sessions_per_instance"): "deploy.max_sessions_per_instance",
}
STEPS = ("ingest", "vae", "train", "distill", "quantize", "evaluate", "register", "deploy")


def _parser(module: str, monkeypatch) -> argparse.ArgumentParser:
    """The parser a step's ``main`` builds, caught at ``parse_args``."""
    caught = {}

    def grab(self, *a, **k):
        caught["p"] = self
        raise SystemExit(0)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", grab)
    with pytest.raises(SystemExit):
        importlib.import_module(f"{module}.__main__").main([])
    monkeypatch.undo()
    return caught["p"]


@pytest.mark.parametrize("module,dest", list(CLI_DEFAULTS), ids=[f"{m}:{d}" for m, d in CLI_DEFAULTS])
def test_cli_default_is_params_yaml(module, dest, monkeypatch):
    assert _parser(module, monkeypatch).get_default(dest) == default(CLI_DEFAULTS[(module, dest)])


@pytest.mark.parametrize("step", STEPS)
def test_every_option_has_help_and_help_shows_defaults(step, monkeypatch):
    p = _parser(f"components.{step}", monkeypatch)
    missing = [a.option_strings[0] for a in p._actions if a.option_strings and not a.help
               and a.dest not in ("help",)]
    assert not missing, f"options without help in python -m components.{step}: {missing}"
    assert "(default:" in p.format_help()


def test_pipeline_defaults_are_params_yaml():
    import inspect

    from pipelines.dags import build_pipeline

    fn = build_pipeline("full").pipeline_func
    sig = {k: v.default for k, v in inspect.signature(fn).parameters.items()}
    expect = {"num_clips": "ingest.num_clips", "seed": "ingest.seed", "clip_height": "ingest.height",
              "clip_width": "ingest.width", "clip_frames": "ingest.frames", "heldout_clips": "heldout.num_clips",
              "heldout_frames": "heldout.frames", "preset": "preset", "steps": "train.steps", "lr": "train.lr",
              "init_bundle": "train.init", "vae_steps": "vae.steps", "vae_lr": "vae.lr",
              "distill_ode_steps": "distill.ode_steps", "distill_dmd_steps": "distill.dmd_steps",
              "distill_teacher_steps": "distill.teacher_steps", "eval_clips": "evaluate.num_clips",
              "model_name": "register.model_name", "serve_device": "deploy.device",
              "serve_instances": "deploy.instance_count", "serve_max_sessions": "deploy.max_sessions_per_instance"}
    for param, key in expect.items():
        assert sig[param] == default(key), (param, sig[param], default(key))

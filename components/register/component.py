"""KFP interface for ``python -m components.register``."""

from kfp import dsl
from kfp.dsl import Artifact, Input, Model, Output

from components.common.paths import image_for


@dsl.component(base_image=image_for("pipelines"), install_kfp_package=False)
def register(
    model: Input[Model],
    report: Input[Artifact],
    registration: Output[Artifact],
    name: str = "sana-wm",
    tracking_uri: str = "",
    parent_run_id: str = "",
    experiment: str = "",
) -> str:
    """Register the bundle as an MLflow model version and give it the alias ``candidate``.

    Args:
        model: Model bundle to register.
        report: Evaluation folder from evaluate (its metrics.json is attached to the version).
        registration: Output JSON (name, version, run id, model URI).
        name: Registered model name.
        tracking_uri: MLflow tracking URI (required: the registry lives there).
        parent_run_id: MLflow run to nest this step under.
        experiment: MLflow experiment name.

    Returns:
        The alias model URI ``models:/<name>@candidate`` for deploy.
    """
    import json
    import os

    from components.common.launch import run_step

    run_step("register", ["--model", model.path, "--metrics", os.path.join(report.path, "metrics.json"),
                          "--name", name, "--out", registration.path], tracking_uri, parent_run_id, experiment)
    with open(registration.path, encoding="utf-8") as f:
        return json.load(f)["alias_uri"]

"""KFP interface for ``python -m components.evaluate``."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from components.common.paths import image_for


@dsl.component(base_image=image_for("train"), install_kfp_package=False)
def evaluate(
    model: Input[Model],
    heldout: Input[Dataset],
    report: Output[Artifact],
    metrics: Output[Metrics],
    num_clips: int = 2,
    teacher: Input[Model] = None,
    student: Input[Model] = None,
    drift_factor: float = 4.0,
    tracking_uri: str = "",
    parent_run_id: str = "",
    experiment: str = "",
):
    """Generate the held-out clips, measure camera following, VAE PSNR and speed; write metrics.json, plots, videos.

    Args:
        model: Model bundle to evaluate.
        heldout: Held-out annotated shards (the data DAG's held-out split; training never reads it).
        report: Output folder (metrics.json, plots/, samples/).
        metrics: The same flat metrics as a KFP Metrics artifact (shown in the KFP UI).
        num_clips: Held-out clips to generate.
        teacher: Optional teacher bundle, scored the same way (teacher.* metrics, table.md).
        student: Optional student bundle, scored the same way (student.* metrics, table.md).
        drift_factor: Drift rollout length in training clip lengths (0 = none).
        tracking_uri: MLflow tracking URI ('' = no tracking).
        parent_run_id: MLflow run to nest this step under.
        experiment: MLflow experiment name.
    """
    import json
    import os

    from components.common.launch import run_step

    argv = ["--model", model.path, "--heldout", heldout.path, "--out", report.path, "--num-clips", num_clips,
            "--drift-factor", drift_factor]
    if teacher is not None:
        argv += ["--teacher", teacher.path]
    if student is not None:
        argv += ["--student", student.path]
    run_step("evaluate", argv, tracking_uri, parent_run_id, experiment)
    with open(os.path.join(report.path, "metrics.json"), encoding="utf-8") as f:
        for k, v in json.load(f).items():
            metrics.log_metric(k, float(v))

"""KFP interface for ``python -m components.distill``."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from components.common.paths import image_for


@dsl.component(base_image=image_for("train"), install_kfp_package=False)
def distill(
    teacher: Input[Model],
    shards: Input[Dataset],
    student: Output[Model],
    ode_steps: int = 60,
    dmd_steps: int = 4,
    teacher_steps: int = 20,
    tracking_uri: str = "",
    parent_run_id: str = "",
    experiment: str = "",
):
    """Distill the teacher into a few-step chunk-causal student bundle.

    Args:
        teacher: Teacher model bundle from train.
        shards: Annotated shards folder.
        student: Output student bundle folder.
        ode_steps: Optimizer steps of the ODE-pair regression (student initialisation).
        dmd_steps: Self-forcing DMD steps after the ODE stage.
        teacher_steps: Euler steps of the teacher trajectories the ODE pairs come from.
        tracking_uri: MLflow tracking URI ('' = no tracking).
        parent_run_id: MLflow run to nest this step under.
        experiment: MLflow experiment name.
    """
    from components.common.launch import run_step

    run_step("distill", ["--teacher", teacher.path, "--shards", shards.path, "--out", student.path,
                         "--ode-steps", ode_steps, "--dmd-steps", dmd_steps, "--teacher-steps", teacher_steps],
             tracking_uri, parent_run_id, experiment)

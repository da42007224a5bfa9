"""KFP interface for ``python -m components.distill``."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from components.common.paths import image_for


@dsl.component(base_image=image_for("train"), install_kfp_package=False)
def distill(
    teacher: Input[Model],
    shards: Input[Dataset],
    student: Output[Model],
    tracking_uri: str = "",
    parent_run_id: str = "",
    experiment: str = "",
):
    """Distill the teacher into a few-step chunk-causal student bundle.

    Args:
        teacher: Teacher model bundle from train.
        shards: Annotated shards folder.
        student: Output student bundle folder.
        tracking_uri: MLflow tracking URI ('' = no tracking).
        parent_run_id: MLflow run to nest this step under.
        experiment: MLflow experiment name.
    """
    from components.common.launch import run_step

    run_step("distill", ["--teacher", teacher.path, "--shards", shards.path, "--out", student.path],
             tracking_uri, parent_run_id, experiment)

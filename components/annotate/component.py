"""KFP interface for ``python -m components.annotate batch``."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from components.common.paths import image_for


@dsl.component(base_image=image_for("annotate"), install_kfp_package=False)
def annotate(
    raw: Input[Dataset],
    shards: Output[Dataset],
    tracking_uri: str = "",
    parent_run_id: str = "",
    experiment: str = "",
):
    """Recover poses, score and caption raw clips; write webdataset shards + manifest.

    Args:
        raw: Raw clips folder from ingest.
        shards: Output folder of annotated webdataset shards.
        tracking_uri: MLflow tracking URI ('' = no tracking).
        parent_run_id: MLflow run to nest this step under.
        experiment: MLflow experiment name.
    """
    from components.common.launch import run_step

    run_step("annotate", ["batch", "--raw", raw.path, "--out", shards.path], tracking_uri, parent_run_id,
             experiment)

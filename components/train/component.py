"""KFP interface for ``python -m components.train`` (local process or a Trainer v2 TrainJob)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from components.common.paths import image_for


@dsl.component(base_image=image_for("train"), install_kfp_package=False)
def train(
    shards: Input[Dataset],
    vae: Input[Model],
    model: Output[Model],
    preset: str = "small",
    steps: int = 200,
    cluster: bool = False,
    trainjob_spec: str = "",
    init: str = "",
    tracking_uri: str = "",
    parent_run_id: str = "",
    experiment: str = "",
):
    """Train the stage-1 world model and write a model bundle.

    Args:
        shards: Annotated shards folder.
        vae: Fitted VAE folder from the vae step (its latents are what the world model learns).
        model: Output model bundle folder.
        preset: Model preset (tiny, small, sana_wm_2b6).
        steps: Optimizer steps.
        cluster: Submit a Kubeflow Trainer v2 TrainJob instead of training in this pod.
        trainjob_spec: JSON TrainJob manifest built at compile time (used when ``cluster``).
        init: Model bundle to fine-tune from (network and VAE loaded strictly; '' = random weights).
        tracking_uri: MLflow tracking URI ('' = no tracking).
        parent_run_id: MLflow run to nest this step under.
        experiment: MLflow experiment name.
    """
    argv = ["--shards", shards.path, "--vae", vae.path, "--preset", preset, "--steps", steps, "--out", model.path]
    if init:
        argv += ["--init", init]
    if cluster:
        import json

        from pipelines.cluster import run_trainjob

        # The spec was built (not submitted) at compile time; submit it now, wait for the multi-node
        # job, and copy the bundle its rank 0 wrote on the shared volume into ``model.path``.
        if not trainjob_spec:
            raise ValueError("train: cluster=True needs trainjob_spec (compile with pipelines.cluster settings)")
        run_trainjob(json.loads(trainjob_spec), shards.path, model.path)
        return
    from components.common.launch import run_step

    run_step("train", argv, tracking_uri, parent_run_id, experiment)

"""KFP interface for ``python -m components.train`` (local process) or its cluster launcher (a Trainer v2 TrainJob)."""

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
    lr: float = 0.0,
    checkpoint_every: int = 0,
    stages_json: str = "",
    cluster: bool = False,
    cluster_spec: str = "",
    kfp_run_id: str = "",
    kfp_task_name: str = "",
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
        steps: Optimizer steps. Single-stage presets train one stage of this many steps; for sana_wm_2b6
            the paper's four stages are scaled to sum to it (0 = their full budget, cluster form).
        lr: Peak learning rate of every stage (0 = the preset's).
        checkpoint_every: Steps between checkpoints (0 = only at the end).
        stages_json: Explicit stages as a JSON list of {latent_frames, steps, batch_size, lr}; wins over steps/lr.
        cluster: Run as a launcher that submits a Kubeflow Trainer v2 TrainJob (built now, from these
            parameters) instead of training in this pod.
        cluster_spec: JSON ``components.train.trainjob.ClusterSpec`` (placement, fixed at compile time).
        kfp_run_id: The KFP run id (per-run output folder, job name).
        kfp_task_name: The KFP task name (job name: a retry re-attaches to the same job).
        init: Model bundle to fine-tune from (network and VAE loaded strictly; '' = random weights).
        tracking_uri: MLflow tracking URI ('' = the task's MLFLOW_TRACKING_URI env, else no tracking).
        parent_run_id: MLflow run to nest this step under.
        experiment: MLflow experiment name.
    """
    if cluster:
        from components.train.launcher import run_on_cluster

        run_on_cluster(shards_path=shards.path, vae_path=vae.path, model_path=model.path, preset=preset, steps=steps, lr=lr,
                       checkpoint_every=checkpoint_every, stages_json=stages_json, cluster_json=cluster_spec,
                       kfp_run_id=kfp_run_id, kfp_task_name=kfp_task_name, tracking_uri=tracking_uri,
                       parent_run_id=parent_run_id, experiment=experiment, init_path=init)
        return
    from components.common.launch import run_step

    argv = ["--shards", shards.path, "--vae", vae.path, "--preset", preset, "--steps", steps, "--out", model.path,
            "--checkpoint-every", checkpoint_every]
    if init:
        argv += ["--init", init]
    if lr > 0:
        argv += ["--lr", lr]
    if stages_json:
        from components.train.trainjob import train_config_from_params

        # Same config as the cluster form would train, but on the local single-process engine.
        cfg = train_config_from_params(preset, steps, lr, checkpoint_every, stages_json)
        import dataclasses

        argv += ["--train-config-json", dataclasses.replace(cfg, deepspeed=False).to_json()]
    run_step("train", argv, tracking_uri, parent_run_id, experiment)

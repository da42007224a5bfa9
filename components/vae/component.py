"""KFP interface for ``python -m components.vae`` (the logic lives in ``components.vae.fit``)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from components.common.paths import image_for


@dsl.component(base_image=image_for("train"), install_kfp_package=False)
def vae(
    shards: Input[Dataset],
    vae: Output[Model],
    preset: str = "small",
    steps: int = 600,
    lr: float = 5e-4,
    seed: int = 0,
    cache_dir: str = "",
    init_bundle: str = "",
    tracking_uri: str = "",
    parent_run_id: str = "",
    experiment: str = "",
):
    """Fit the preset's video VAE on the training clips; write the VAE folder train reads with --vae.

    Args:
        shards: Annotated training shards folder.
        vae: Output VAE folder (diffusers config.json + safetensors, fit.json, before_after.png, curve.png).
        preset: Model preset whose VAE is fitted (tiny, small, sana_wm_2b6: pretrained, copied through).
        steps: Optimizer steps of the fit.
        lr: Peak AdamW learning rate.
        seed: Seed of the random initial weights and of the window sampling.
        cache_dir: Folder of earlier fits keyed by data + options ('' = always fit).
        init_bundle: Model bundle whose VAE is used as is (train fine-tunes that bundle; '' = fit one).
        tracking_uri: MLflow tracking URI ('' = no tracking).
        parent_run_id: MLflow run to nest this step under.
        experiment: MLflow experiment name.
    """
    from components.common.launch import run_step

    argv = ["--shards", shards.path, "--out", vae.path, "--preset", preset, "--steps", steps, "--lr", lr,
            "--seed", seed, "--no-progress"]
    if cache_dir:
        argv += ["--cache-dir", cache_dir]
    if init_bundle:
        argv += ["--init-bundle", init_bundle]
    run_step("vae", argv, tracking_uri, parent_run_id, experiment)

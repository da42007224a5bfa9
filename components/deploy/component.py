"""KFP interface for ``python -m components.deploy``."""

from kfp import dsl
from kfp.dsl import Artifact, Output

from components.common.paths import image_for


@dsl.component(base_image=image_for("serve"), install_kfp_package=False)
def deploy(
    model_uri: str,
    triton_repo: Output[Artifact],
    outputs: Output[Artifact],
    keep_serving: bool = False,
    device: str = "auto",
    instance_count: int = 1,
    max_sessions_per_instance: int = 4,
    tracking_uri: str = "",
    parent_run_id: str = "",
    experiment: str = "",
):
    """Build the Triton repository for a registered model, smoke-test a real server, promote to production.

    Args:
        model_uri: Registered model URI (``models:/<name>@candidate``).
        triton_repo: Output Triton model repository folder.
        outputs: Output folder with the generated mp4, contact sheet PNG and smoke.json.
        keep_serving: Leave the server running after the smoke request.
        device: Where Triton runs the model: auto | cpu | cuda[:i] (a quantized bundle is served where it was built).
        instance_count: Triton instances per model (each loads the bundle).
        max_sessions_per_instance: Live interactive sessions one session-model instance holds.
        tracking_uri: MLflow tracking URI (required: the registry lives there).
        parent_run_id: MLflow run to nest this step under.
        experiment: MLflow experiment name.
    """
    from components.common.launch import run_step

    argv = ["--model-uri", model_uri, "--repo", triton_repo.path, "--outputs", outputs.path, "--device", device,
            "--instance-count", str(instance_count), "--max-sessions-per-instance", str(max_sessions_per_instance)]
    run_step("deploy", argv + (["--keep-serving"] if keep_serving else []), tracking_uri, parent_run_id,
             experiment)

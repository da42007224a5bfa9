"""KFP interface for ``python -m components.quantize``."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from components.common.paths import image_for


@dsl.component(base_image=image_for("train"), install_kfp_package=False)
def quantize(
    model: Input[Model],
    shards: Input[Dataset],
    quantized: Output[Model],
    mode: str = "qkv",
    tracking_uri: str = "",
    parent_run_id: str = "",
    experiment: str = "",
):
    """NVFP4 post-training quantization of a bundle (ModelOpt), calibrated on the shards.

    Args:
        model: Model bundle to quantize (the distilled student).
        shards: Annotated shards folder (calibration data).
        quantized: Output quantized bundle folder.
        mode: Which linears to quantize ('qkv' = self-attention qkv only, the paper's default).
        tracking_uri: MLflow tracking URI ('' = no tracking).
        parent_run_id: MLflow run to nest this step under.
        experiment: MLflow experiment name.
    """
    from components.common.launch import run_step

    run_step("quantize", ["--model", model.path, "--shards", shards.path, "--mode", mode, "--out",
                          quantized.path], tracking_uri, parent_run_id, experiment)

"""KFP interface for ``python -m components.ingest`` (logic lives in the step's ``__main__``)."""

from kfp import dsl
from kfp.dsl import Dataset, Output

from components.common.paths import image_for


@dsl.component(base_image=image_for("annotate"), install_kfp_package=False)
def ingest(
    raw: Output[Dataset],
    num_clips: int = 8,
    seed: int = 0,
    source_dir: str = "",
    height: int = 64,
    width: int = 96,
    frames: int = 33,
    split: str = "train",
    holdout_kinds: str = "",
    tracking_uri: str = "",
    parent_run_id: str = "",
    experiment: str = "",
):
    """Collect raw clips (mp4 + pose npz + manifest.jsonl).

    Args:
        raw: Output folder of raw clips.
        num_clips: Synthetic clips to render when ``source_dir`` is empty.
        seed: Seed of the synthetic generator.
        source_dir: Folder of existing clips to ingest instead of synthesising.
        height: Synthetic clip height in pixels (match the model preset).
        width: Synthetic clip width in pixels.
        frames: Frames per synthetic clip.
        split: Synthetic split, train or heldout (held-out scenes come from a separate seed stream).
        holdout_kinds: Space-separated trajectory kinds only the held-out split has ('' = none).
        tracking_uri: MLflow tracking URI ('' = no tracking).
        parent_run_id: MLflow run to nest this step under.
        experiment: MLflow experiment name.
    """
    from components.common.launch import run_step

    src = (["--source", source_dir] if source_dir else
           ["--synthetic", num_clips, "--seed", seed, "--height", height, "--width", width, "--frames", frames,
            "--split", split] + (["--holdout-kinds", *holdout_kinds.split()] if holdout_kinds.strip() else []))
    run_step("ingest", [*src, "--no-progress", "--out", raw.path], tracking_uri, parent_run_id, experiment)

"""KFP interfaces for ``python -m components.annotate``: one-task ``batch``, and the plan / group / merge fan-out."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Output

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


# Fan-out form (the `data` DAG): plan -> ParallelFor(annotate_group) -> annotate_merge over Collected outputs.
# Every body goes through run_step("annotate", ...), the same `python -m components.annotate` entry.


@dsl.component(base_image=image_for("annotate"), install_kfp_package=False)
def annotate_plan(
    raw: Input[Dataset],
    plan: Output[Artifact],
    groups: int = 2,
    tracking_uri: str = "",
    parent_run_id: str = "",
    experiment: str = "",
) -> list[list[str]]:
    """Split the raw clips into cost-balanced groups; returns the groups (the ParallelFor items).

    Args:
        raw: Raw clips folder from ingest.
        plan: Output plan.json (groups, per-group load, cost unit).
        groups: Number of groups K (fewer when there are fewer clips).
        tracking_uri: MLflow tracking URI ('' = no tracking).
        parent_run_id: MLflow run to nest this step under.
        experiment: MLflow experiment name.
    """
    from components.annotate.fanout import read_plan
    from components.common.launch import run_step

    run_step("annotate", ["plan", "--raw", raw.path, "--groups", groups, "--out", plan.path], tracking_uri,
             parent_run_id, experiment)
    return read_plan(plan.path)["groups"]


@dsl.component(base_image=image_for("annotate"), install_kfp_package=False)
def annotate_group(
    raw: Input[Dataset],
    ids: list[str],
    shards: Output[Dataset],
    workers: int = 2,
    tracking_uri: str = "",
    parent_run_id: str = "",
    experiment: str = "",
):
    """Annotate one group of clips (``batch --ids``) into its own shard folder.

    Args:
        raw: Raw clips folder from ingest.
        ids: Clip ids of this group (one item of annotate_plan's output).
        shards: Output folder of this group's webdataset shards + manifest.
        workers: Local worker processes inside this task.
        tracking_uri: MLflow tracking URI ('' = no tracking).
        parent_run_id: MLflow run to nest this step under.
        experiment: MLflow experiment name.
    """
    import json
    import os
    import tempfile

    from components.common.launch import run_step

    # An @file, not a comma list: clip ids come from file names and may hold commas.
    fd, ids_file = tempfile.mkstemp(prefix="annotate-ids-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(list(ids), fh)
        run_step("annotate", ["batch", "--raw", raw.path, "--out", shards.path, "--ids", "@" + ids_file,
                              "--workers", int(workers), "--quiet"], tracking_uri, parent_run_id, experiment)
    finally:
        os.unlink(ids_file)


@dsl.component(base_image=image_for("annotate"), install_kfp_package=False)
def annotate_merge(
    parts: Input[list[Dataset]],
    shards: Output[Dataset],
    tracking_uri: str = "",
    parent_run_id: str = "",
    experiment: str = "",
):
    """Merge the groups' shard folders into one (shards renumbered, one manifest).

    Args:
        parts: The annotate_group outputs (dsl.Collected).
        shards: Output folder of annotated webdataset shards, as one batch would write it.
        tracking_uri: MLflow tracking URI ('' = no tracking).
        parent_run_id: MLflow run to nest this step under.
        experiment: MLflow experiment name.
    """
    from components.common.launch import run_step

    run_step("annotate", ["merge", "--parts", *[p.path for p in parts], "--out", shards.path], tracking_uri,
             parent_run_id, experiment)

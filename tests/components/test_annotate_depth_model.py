"""The monocular metric-depth loader on a real (tiny, random-weight) transformers depth model from a local folder.

The checkpoint is built with transformers' own classes (Depth Anything: a 4-layer DINOv2 backbone of width
32, ~130 k parameters) and ``save_pretrained`` into tmp_path, so the loader meets exactly the files a real
Depth-Anything-V2 metric checkpoint has (config.json, model.safetensors, preprocessor_config.json).
"""

import json

import numpy as np
import pytest

transformers = pytest.importorskip("transformers", reason="pip install '.[annotate]' (transformers + torch)")
torch = pytest.importorskip("torch")

from components.annotate.batch import BatchConfig, run_batch
from components.annotate.depth import DepthModel, load_hf_depth_model
from components.annotate.poses import estimate_poses
from components.annotate.shards import iter_shard_samples
from components.ingest.synthetic import ClipSpec, generate_dataset, render_clip

MAX_DEPTH_M = 20


def _save_tiny_depth_anything(path, depth_type="metric"):
    from transformers import (
        DepthAnythingConfig,
        DepthAnythingForDepthEstimation,
        Dinov2Config,
        DPTImageProcessor,
    )

    backbone = Dinov2Config(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                            image_size=56, patch_size=14, out_features=["stage1", "stage2", "stage3", "stage4"],
                            reshape_hidden_states=False)
    cfg = DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=32, patch_size=14,
                              neck_hidden_sizes=[16, 16, 16, 16], fusion_hidden_size=16, head_hidden_size=8,
                              depth_estimation_type=depth_type, max_depth=MAX_DEPTH_M)
    torch.manual_seed(0)
    DepthAnythingForDepthEstimation(cfg).save_pretrained(path)
    # The model runs at 56x56 (4x4 patches): the loader must bring its output back to the frame grid.
    DPTImageProcessor(size={"height": 56, "width": 56}, keep_aspect_ratio=False).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tiny_depth_dir(tmp_path_factory):
    return _save_tiny_depth_anything(tmp_path_factory.mktemp("tiny-depth-anything"))


def test_loader_loads_local_checkpoint_and_returns_frame_sized_metric_depth(tiny_depth_dir):
    model = load_hf_depth_model(tiny_depth_dir)
    assert isinstance(model, DepthModel)
    frame = np.random.default_rng(0).integers(0, 256, (72, 104, 3), dtype=np.uint8)
    z = model(frame)
    assert z.shape == (72, 104) and z.dtype == np.float32
    # Depth Anything's metric head is sigmoid x max_depth: strictly inside (0, max_depth) metres.
    assert np.isfinite(z).all() and (z > 0).all() and (z < MAX_DEPTH_M).all()
    with pytest.raises(ValueError, match=r"uint8 \(H,W,3\)"):
        model(frame.astype(np.float32))


def test_annotator_with_the_model_is_metric_and_says_monocular(tiny_depth_dir):
    c = render_clip(ClipSpec(kind="turn", speed="slow", num_frames=12, fps=12.0, height=64, width=96, seed=3))
    calls = []
    hf = load_hf_depth_model(tiny_depth_dir)

    def counted(frame):
        calls.append(frame.shape)
        return hf(frame)

    res = estimate_poses(c.frames, c.fps, c.intrinsics, depth_model=counted)
    assert res.metric and res.scale_source == "monocular_depth"
    assert len(calls) == res.diagnostics["num_keyframes"] >= 1 and all(s == (64, 96, 3) for s in calls)
    R = res.c2w[:, :3, :3]
    assert np.isfinite(res.c2w).all()
    np.testing.assert_allclose(R @ np.transpose(R, (0, 2, 1)), np.broadcast_to(np.eye(3), R.shape), atol=1e-6)
    # The other two scale sources say so too.
    assert estimate_poses(c.frames, c.fps, c.intrinsics, depth=c.depth).scale_source == "sensor_depth"
    assert estimate_poses(c.frames, c.fps, c.intrinsics, scale_free=True).scale_source == "none"


def test_batch_with_depth_model_path_records_monocular_scale(tiny_depth_dir, tmp_path):
    raw = tmp_path / "raw"
    generate_dataset(raw, 1, seed=1, height=64, width=96, num_frames=13, fps=8, progress=False)
    for npz in raw.glob("*.npz"):  # real footage: no sensor depth, no intrinsics
        npz.unlink()
    summary = run_batch(raw, tmp_path / "shards",
                        BatchConfig(workers=1, progress=False, use_filters=False, depth_model_path=str(tiny_depth_dir)))
    assert summary["kept"] == 1, summary["records"]
    (sample,) = iter_shard_samples(tmp_path / "shards", decode=False)
    assert sample["meta"]["metric"] is True and sample["meta"]["scale_source"] == "monocular_depth"


def test_loader_errors_name_the_problem(tmp_path, tiny_depth_dir):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_hf_depth_model(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_hf_depth_model(empty)
    # A real transformers checkpoint, but of a classifier, not a depth model.
    from transformers import ViTConfig, ViTForImageClassification

    vit = tmp_path / "vit"
    ViTForImageClassification(ViTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                        intermediate_size=16, image_size=32, patch_size=16)).save_pretrained(vit)
    with pytest.raises(ValueError, match="not a depth-estimation architecture"):
        load_hf_depth_model(vit)
    # Relative depth has no metres: refused, not silently used as a scale source.
    rel = _save_tiny_depth_anything(tmp_path / "relative", depth_type="relative")
    with pytest.raises(ValueError, match="relative-depth checkpoint"):
        load_hf_depth_model(rel)
    # Weights present but no image processor.
    no_proc = tmp_path / "no-processor"
    no_proc.mkdir()
    for name in ("config.json", "model.safetensors"):
        (no_proc / name).write_bytes((tiny_depth_dir / name).read_bytes())
    with pytest.raises(ValueError, match="image processor"):
        load_hf_depth_model(no_proc)
    # A config.json of no known architecture.
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps({"model_type": "no-such-model"}))
    with pytest.raises(ValueError, match="not a transformers config"):
        load_hf_depth_model(bad)

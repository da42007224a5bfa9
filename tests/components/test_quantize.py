"""NVFP4 PTQ with ModelOpt on CPU (fake-quant backend): error per mode, Hadamard, save/restore, engine gate."""

from __future__ import annotations

import pytest
import torch

from components.distill.student import conditions_from_dataset
from components.quantize.__main__ import main, noisy_batches
from components.quantize.ptq import quantization_errors
from components.train.data import ClipLatentDataset, synthetic_samples
from model.config import get_preset
from model.pipeline import WorldModelPipeline
from model.quant.bundle import QuantSpec, build_quantized, load_quantized, save_quantized_bundle
from model.quant.hadamard import HadamardLinear, rotation_matrix
from model.quant.nvfp4 import _nvfp4_fake, enabled_quantizers, quant_config


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    cfg = get_preset("tiny")
    pipe = WorldModelPipeline.from_config(cfg, seed=0)
    samples = synthetic_samples(4, cfg.vae.num_raw_frames(7), 64, 64, seed=4)
    ds = ClipLatentDataset(samples, cfg, 7, pipe.vae, pipe.text_encoder, tmp_path_factory.mktemp("cache"))
    calib = noisy_batches(ds, cfg, [0, 1], seed=0)
    evalb = noisy_batches(ds, cfg, [2, 3], seed=1)
    conds = conditions_from_dataset(ds, cfg).select([2, 3])
    sampler = {"mode": "streaming", "num_steps": 3, "shift": cfg.sampler.flow_shift, "guidance": 1.0}
    qnets = {m: build_quantized(pipe.network, QuantSpec(m), calib) for m in ("qkv", "all")}
    errs = {m: quantization_errors(pipe.network, q, evalb, conds, sampler) for m, q in qnets.items()}
    return pipe, calib, evalb, conds, sampler, qnets, errs


def test_fake_nvfp4_exact_on_representable_values_and_lossy_otherwise():
    grid = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0])
    x = torch.cat([grid, -grid]).reshape(1, 16)
    assert torch.equal(_nvfp4_fake(x, None), x)  # FP4 E2M1 values with block max 6 survive exactly
    y = torch.randn(4, 40, generator=torch.Generator().manual_seed(0))  # 40: a partial last block
    q = _nvfp4_fake(y, None)
    assert q.shape == y.shape
    rel = float((q - y).pow(2).mean() / y.pow(2).mean())
    assert 1e-4 < rel < 0.05  # 4-bit with 16-element blocks: about 1% relative MSE on Gaussians


def test_quant_config_is_a_list_of_rules():
    cfg = quant_config("qkv", cpu=True)
    assert isinstance(cfg["quant_cfg"], list) and cfg["quant_cfg"][0] == {"quantizer_name": "*", "enable": False}
    assert all("quantizer_name" in r for r in cfg["quant_cfg"])
    with pytest.raises(ValueError, match="mode"):
        quant_config("fp8", cpu=True)


def test_modes_quantize_what_they_say(setup):
    _, _, _, _, _, qnets, errs = setup
    names = enabled_quantizers(qnets["qkv"])
    assert names and all(".attn.qkv." in n or "_proj_cam." in n for n in names)
    assert len(enabled_quantizers(qnets["all"])) > len(names)
    assert errs["qkv"]["velocity_rel_mse"] > 0
    assert errs["all"]["velocity_rel_mse"] > errs["qkv"]["velocity_rel_mse"]
    assert errs["all"]["generated_latents_rel_mse"] > errs["qkv"]["generated_latents_rel_mse"] > 0


def test_hadamard_rotation_is_exact_before_quantization():
    R = rotation_matrix(192, seed=3)
    torch.testing.assert_close(R @ R.T, torch.eye(192, dtype=torch.float64))
    lin = torch.nn.Linear(64, 96)
    had = HadamardLinear(lin, seed=1)
    x = torch.randn(5, 64)
    torch.testing.assert_close(had(x), lin(x), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="divisible by 16"):
        rotation_matrix(24, 0)


def test_save_restore_round_trip(setup, tmp_path):
    pipe, calib, evalb, _, _, _, _ = setup
    spec = QuantSpec("qkv", hadamard=True, seed=5)
    q = build_quantized(pipe.network, spec, calib)
    out = save_quantized_bundle(pipe, q, spec, tmp_path / "qb", {"note": "test"})
    back = load_quantized(out)
    assert back.metadata["kind"] == "quantized"
    assert isinstance(back.network.blocks[0].attn.qkv, HadamardLinear)
    x, sigma, text, mask, cam, lens = evalb[0]
    with torch.no_grad():
        a = q(x, sigma, text, mask, cam, mode="chunk_causal", chunk_lens=lens)
        b = back.network(x, sigma, text, mask, cam, mode="chunk_causal", chunk_lens=lens)
    torch.testing.assert_close(a, b)
    assert enabled_quantizers(back.network) == enabled_quantizers(q)
    # the base weights stay loadable by any reader
    assert WorldModelPipeline.from_pretrained(out).metadata["info"]["quant"]["mode"] == "qkv"


def test_engine_export_without_gpu_exits_3(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine can build engines")
    rc = main(["--model", str(tmp_path), "--shards", str(tmp_path), "--out", str(tmp_path / "o"), "--export-engine"])
    assert rc == 3
    assert "TensorRT engine export needs a CUDA GPU and the tensorrt package" in capsys.readouterr().err


def test_serving_and_evaluation_load_the_quantized_network(setup, tmp_path):
    """The default Triton loader and evaluation run the NVFP4 module tree, not the plain base weights."""
    from model.quant.bundle import load_bundle
    from serving.predictor import load_pipeline

    pipe, calib, _, _, _, _, _ = setup
    spec = QuantSpec("qkv")
    q = build_quantized(pipe.network, spec, calib)
    out = save_quantized_bundle(pipe, q, spec, tmp_path / "qb2", {})
    for loaded in (load_pipeline(out), load_bundle(out)):
        assert enabled_quantizers(loaded.network) == enabled_quantizers(q) and enabled_quantizers(q)
    plain = tmp_path / "plain"
    pipe.save_pretrained(plain)
    assert not enabled_quantizers(load_pipeline(plain).network)


def test_quantized_bundle_records_where_it_was_built_and_is_served_there(setup, tmp_path):
    """Built on the CPU (the fake-quant reference): recorded, placed on KIND_CPU, refused elsewhere."""
    from tritonclient.grpc import model_config_pb2 as mc

    from model.quant.bundle import build_device, load_bundle
    from serving.triton_repo import build_repository, read_model_config

    pipe, calib, _, _, _, qnets, _ = setup
    out = save_quantized_bundle(pipe, qnets["qkv"], QuantSpec("qkv"), tmp_path / "qb", {})
    assert build_device(out) == "cpu" and build_device(tmp_path / "qb" / "network") is None
    repo = build_repository(out, tmp_path / "repo", models=("session",), device="auto", cuda_available=True)
    cfg = read_model_config(repo / "sana_wm_session")
    assert [g.kind for g in cfg.instance_group] == [mc.ModelInstanceGroup.KIND_CPU]
    with pytest.raises(ValueError, match="was built on cpu and is served there, not on 'cuda'"):
        load_bundle(out, device="cuda")  # refused before any weight is read

"""Turn released SANA-WM checkpoints on local disk into our model bundle (``WorldModelPipeline``).

Two layouts, both read from a local path only (weights are never downloaded):

  * a diffusers ``SanaWMPipeline`` directory (``import_diffusers_pipeline``)::

        transformer/   SanaWMTransformer3DModel   -> network (strict, see model.interop)
        vae/           AutoencoderKLLTX2Video     -> vae
        text_encoder/  Gemma-2 (transformers)     -> text encoder, copied into the bundle with
        tokenizer/                                   its tokenizer
        scheduler/     FlowMatchEulerDiscreteScheduler (its shift becomes sampler.flow_shift)

  * the NVlabs streaming release (``import_sana_streaming``)::

        sana_dit/model.pt           the chunk-causal 4-step student (key mapping: model.interop); its
                                    network config from sana_dit/config.json (diffusers format) when
                                    present, else the ``preset``'s
        ltx2_causal_vae/            AutoencoderKLLTX2Video directory
        refiner_diffusers/          the stage-2 LTX-2 refiner (SanaWMLTX2Refiner), copied to <bundle>/refiner
        text_encoder/ + tokenizer/  the stage-1 Gemma-2 encoder (or ``text_encoder=`` another directory)

The bundle then goes through every step of the stack unchanged (generate, distill, quantize, evaluate,
register, deploy, Triton).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

from model.config import (
    ChunkConfig,
    SamplerConfig,
    TextEncoderConfig,
    VAEConfig,
    WorldModelConfig,
    get_preset,
)

__all__ = ["import_diffusers_pipeline", "import_sana_streaming"]

PAPER_HW = (704, 1280)


def _need_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise FileNotFoundError(f"{what}: directory {str(path)!r} does not exist")
    return path


def _vae(directory: Path):
    """(VAEConfig, VideoVAE) for a diffusers AutoencoderKLLTX2Video directory."""
    from model.encoders.vae import _strides, build_vae

    cfg_path = _need_dir(directory, "VAE") / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"VAE directory {str(directory)!r} has no config.json")
    cls = json.loads(cfg_path.read_text()).get("_class_name")
    if cls != "AutoencoderKLLTX2Video":
        raise ValueError(f"{cfg_path}: expected an AutoencoderKLLTX2Video (the SANA-WM latent space), got {cls!r}")
    from diffusers import AutoencoderKLLTX2Video

    probe = AutoencoderKLLTX2Video.from_config(AutoencoderKLLTX2Video.load_config(str(directory)))
    c, t, s = _strides(probe, "ltx2")
    vcfg = VAEConfig(kind="ltx2", latent_channels=c, temporal_stride=t, spatial_stride=s,
                     pretrained_path=str(directory))
    vae = build_vae(vcfg)
    return replace(vcfg, pretrained_path=None), vae  # the bundle keeps its own copy of the weights


def _text_encoder(model_dir: Path, tokenizer_dir: Path | None, max_length: int):
    """(TextEncoderConfig, HFTextEncoder) from a transformers model dir (+ a separate tokenizer dir)."""
    from model.encoders.text import HFTextEncoder

    _need_dir(model_dir, "text encoder")
    merged = Path(tempfile.mkdtemp(prefix="sana-wm-text-"))
    shutil.copytree(model_dir, merged, dirs_exist_ok=True)
    if tokenizer_dir is not None and tokenizer_dir.is_dir():
        shutil.copytree(tokenizer_dir, merged, dirs_exist_ok=True)
    hidden = json.loads((merged / "config.json").read_text())
    hidden = hidden.get("hidden_size") or hidden.get("text_config", {}).get("hidden_size")
    enc = HFTextEncoder(merged, dim=int(hidden), max_length=max_length)
    return TextEncoderConfig(kind="hf", dim=int(hidden), max_length=max_length), enc


def _assemble(net, vae_cfg, vae, text_cfg, text_enc, sampler: SamplerConfig, hw, fps: float, name: str):
    from model.pipeline import WorldModelPipeline

    n = net.cfg
    if n.latent_channels != vae_cfg.latent_channels or n.temporal_stride != vae_cfg.temporal_stride:
        raise ValueError(f"transformer expects {n.latent_channels} latent channels / temporal stride "
                         f"{n.temporal_stride}, but the VAE has {vae_cfg.latent_channels} / {vae_cfg.temporal_stride}")
    if n.text_dim != text_cfg.dim:
        raise ValueError(f"transformer expects {n.text_dim}-d text features, the text encoder gives {text_cfg.dim}")
    cfg = WorldModelConfig(name=name, network=n, vae=vae_cfg, text=text_cfg, chunks=ChunkConfig(), sampler=sampler,
                           video_height=int(hw[0]), video_width=int(hw[1]), fps=float(fps))
    return WorldModelPipeline(cfg, net.eval(), vae, text_enc)


def import_diffusers_pipeline(src: str | Path, out: str | Path, *, hw: tuple[int, int] = PAPER_HW,
                              fps: float = 16.0, max_length: int = 300) -> Path:
    """Write our bundle for a diffusers SanaWMPipeline directory (layout in the module docstring)."""
    from model.interop import load_diffusers_transformer

    src = _need_dir(Path(src), "diffusers pipeline")
    net = load_diffusers_transformer(src / "transformer")
    vae_cfg, vae = _vae(src / "vae")
    text_cfg, text = _text_encoder(src / "text_encoder", src / "tokenizer", max_length)
    shift = 9.8  # the paper's inference shift, unless the scheduler config says otherwise
    sched = src / "scheduler" / "scheduler_config.json"
    if sched.is_file():
        shift = float(json.loads(sched.read_text()).get("shift", shift))
    pipe = _assemble(net, vae_cfg, vae, text_cfg, text, SamplerConfig(flow_shift=shift), hw, fps, "imported")
    return pipe.save_pretrained(out, kind="teacher", info={"imported_from": str(src), "format": "diffusers"})


def import_sana_streaming(src: str | Path, out: str | Path, *, preset: str = "sana_wm_2b6",
                          text_encoder: str | Path | None = None, hw: tuple[int, int] = PAPER_HW,
                          fps: float = 16.0, max_length: int = 300) -> Path:
    """Write our (student) bundle for the streaming release's directory (layout in the module docstring)."""
    from model.interop import load_sana_transformer, network_config_from_diffusers

    src = _need_dir(Path(src), "SANA-WM streaming release")
    dit = src / "sana_dit"
    ckpt = dit / "model.pt"
    if not ckpt.is_file():
        raise FileNotFoundError(f"{str(src)!r} has no sana_dit/model.pt (the streaming DiT checkpoint)")
    cfg_json = dit / "config.json"
    net_cfg = (network_config_from_diffusers(json.loads(cfg_json.read_text())) if cfg_json.is_file()
               else get_preset(preset).network)
    net = load_sana_transformer(ckpt, net_cfg)
    vae_cfg, vae = _vae(src / "ltx2_causal_vae")
    te = Path(text_encoder) if text_encoder is not None else src / "text_encoder"
    text_cfg, text = _text_encoder(te, src / "tokenizer" if text_encoder is None else None, max_length)
    # The release's streaming recipe: 4 steps at timesteps 1000, 960, 889, 727, flow shift 8, no CFG.
    sampler = SamplerConfig(num_steps=4, guidance_scale=1.0, flow_shift=8.0)
    pipe = _assemble(net, vae_cfg, vae, text_cfg, text, sampler, hw, fps, "imported-streaming")
    info = {"imported_from": str(src), "format": "sana-streaming", "sampler_mode": "few_step",
            "distilled_sigmas": list(sampler.distilled_sigmas)}
    refiner = src / "refiner_diffusers"
    if (refiner / "model_index.json").is_file():  # stage 2 travels with the bundle (model.refiner loads it)
        pipe.refiner_dir = refiner
    return pipe.save_pretrained(out, kind="student", info=info)

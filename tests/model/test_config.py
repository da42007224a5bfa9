"""Config presets, validation messages and JSON round trips."""

import pytest

from model.config import ChunkConfig, NetworkConfig, WorldModelConfig, get_preset


@pytest.mark.parametrize("name", ["tiny", "small", "sana_wm_2b6"])
def test_presets_round_trip_json(name):
    cfg = get_preset(name)
    import json
    back = WorldModelConfig.from_dict(json.loads(cfg.to_json()))
    assert back == cfg


def test_paper_preset_matches_design():
    n = get_preset("sana_wm_2b6").network
    assert (n.num_blocks, n.hidden_dim, n.num_heads, n.head_dim) == (20, 2240, 20, 112)
    assert n.softmax_blocks == (3, 7, 11, 15, 19)
    assert (n.latent_channels, n.text_dim, n.plucker_channels, n.mlp_ratio) == (128, 2304, 48, 3.0)
    cfg = get_preset("sana_wm_2b6")
    assert cfg.latent_hw == (22, 40)
    assert cfg.vae.num_latent_frames(961) == 121


def test_chunk_lengths():
    c = ChunkConfig()
    assert c.chunk_lengths(10) == [4, 3, 3]
    assert c.chunk_lengths(12) == [4, 3, 3, 2]
    assert c.chunk_lengths(2) == [2]


@pytest.mark.parametrize("kw,msg", [
    (dict(hidden_dim=65), "hidden_dim"),
    (dict(softmax_blocks=(1, 1)), "duplicates"),
    (dict(head_dim=36, hidden_dim=72), "multiple of 8"),
    (dict(temporal_conv_kernel=5), "must be 3"),
])
def test_network_validation_names_field(kw, msg):
    with pytest.raises(ValueError, match=msg):
        NetworkConfig(**kw)


def test_world_config_cross_checks():
    cfg = get_preset("tiny")
    with pytest.raises(ValueError, match="latent_channels"):
        cfg.replace(network=NetworkConfig(latent_channels=4))
    with pytest.raises(ValueError, match="unknown keys"):
        WorldModelConfig.from_dict({"nope": 1})
    with pytest.raises(ValueError, match="raw frame count"):
        cfg.vae.num_latent_frames(10)
    with pytest.raises(ValueError, match="unknown preset"):
        get_preset("huge")

"""The local run's config: params.yaml's deploy.* reaches it, and bad serving capacity is refused by name."""

from __future__ import annotations

import pytest
import yaml

from pipelines.local import config_from_params


def test_deploy_section_of_params_yaml_sizes_the_served_model(tmp_path):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(
        {"deploy": {"device": "cpu", "instance_count": 2, "max_sessions_per_instance": 3}}))
    cfg = config_from_params(tmp_path)
    assert (cfg.serve_device, cfg.serve_instances, cfg.serve_max_sessions) == ("cpu", 2, 3)
    assert cfg.dvc_params()["deploy"] == {"device": "cpu", "instance_count": 2, "max_sessions_per_instance": 3}


@pytest.mark.parametrize("field", ["instance_count", "max_sessions_per_instance"])
def test_serving_capacity_below_one_is_a_clear_error(tmp_path, field):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"deploy": {field: 0}}))
    with pytest.raises(ValueError, match="serve_instances >= 1 and serve_max_sessions >= 1"):
        config_from_params(tmp_path)

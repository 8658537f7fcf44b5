"""Every shipped training config validates; unknown keys are rejected."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from training.config import TrainConfig, load_config

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.toml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_configs_validate(path: Path) -> None:
    cfg = load_config(path)
    assert cfg.out_dir.is_absolute()


def test_overrides_and_strictness(tmp_path: Path) -> None:
    p = tmp_path / "c.json"
    p.write_text('{"head": {"name": "cosface", "hyper": {"m": 0.35}}}')
    cfg = load_config(p, {"optim.lr": 0.02, "data.sampler": "sqrt"})
    assert cfg.optim.lr == 0.02 and cfg.data.sampler == "sqrt" and cfg.head.hyper == {"m": 0.35}
    with pytest.raises(ValidationError):
        TrainConfig.model_validate({"optim": {"lr": 0.1, "lrr": 1}})
    with pytest.raises(ValidationError):
        TrainConfig.model_validate({"data": {"sources": [{"kind": "lfw"}]}})  # lfw needs a root

"""A conv type registered in one place trains, is benchmarked and is reported beside the baseline."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from conftest import CONF_DIR
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf, open_dict
from torch import nn

from sepdense.bench.run import run_benchmark
from sepdense.models import CONV_TYPES, DenseNet, register_conv_type
from sepdense.report import write_report
from sepdense.runs import CONFIG_FILE
from sepdense.train import train


def grouped_conv(
    in_channels: int, out_channels: int, kernel_size: int, stride: int, padding: int, bias: bool, mid_norm: bool
) -> nn.Module:
    """A grouped k×k conv (up to 4 groups): a third conv type that the project knows nothing about."""
    groups = math.gcd(math.gcd(in_channels, out_channels), 4)
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=bias)


@pytest.fixture
def grouped() -> str:
    register_conv_type("grouped", grouped_conv)
    yield "grouped"
    del CONV_TYPES["grouped"]


def compose_cfg(name: str, *overrides: str, output_dir: Path):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name=name, overrides=list(overrides))
    GlobalHydra.instance().clear()
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
    return cfg


@pytest.mark.slow
def test_a_registered_conv_type_trains_benchmarks_and_reports(grouped: str, tmp_path: Path) -> None:
    net = DenseNet(conv=grouped, block_config=(2, 2, 2, 2))
    assert sum(isinstance(m, nn.Conv2d) and m.groups == 4 for m in net.modules()) == 8  # one per dense layer

    # Trains: a smoke run of each conv type into one sweep-like directory.
    sweep = tmp_path / "sweep"
    for conv in ("standard", grouped):
        run_dir = sweep / f"model.conv={conv}"
        cfg = compose_cfg("train", "debug=smoke", "callbacks.progress_bar=null", f"model.conv={conv}",
                          output_dir=run_dir)  # fmt: skip
        metrics = train(cfg)
        assert 0 <= metrics["test/acc"] <= 1 and metrics["model/params"] > 0
        (run_dir / CONFIG_FILE).parent.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(cfg, run_dir / CONFIG_FILE)  # what Hydra writes into every run directory

    # Reported: the report compares it with the baseline.
    report = write_report(sweep)
    summary = json.loads((report / "summary.json").read_text())
    assert set(summary["by_conv"]) == {"standard", grouped}
    assert "Grouped compared with standard convolutions" in summary["findings"]

    # Benchmarked: it gets rows at the layer and model level and ratios to the baseline.
    cfg = compose_cfg("benchmark", "preset=quick", "levels=[layer,model]", "layer_level.channels=[8]",
                      "layer_level.sizes=[4]", "model.block_config=[1,1,1,1]", "model_level.inference_batch=4",
                      "model_level.train_batch=4", output_dir=tmp_path / "bench")  # fmt: skip
    results = run_benchmark(cfg)
    assert {r["conv"] for r in results["levels"]["layer"]} == {"standard", "separable", grouped}
    assert {r["conv"] for r in results["levels"]["model"]} == {"standard", "separable", grouped}
    pairs = {r["conv"] for r in results["levels"]["model_comparison"]}
    assert pairs == {"separable ÷ standard", f"{grouped} ÷ standard"}

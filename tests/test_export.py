"""Deployment in ONNX Runtime: export round trip, int8, the export and evaluate entry points, the deploy level."""

from __future__ import annotations

import collections
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CONF_DIR, entry_config
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import open_dict
from torch import nn

from sepdense.bench.deploy import benchmark_deploy
from sepdense.bench.run import run_benchmark
from sepdense.cli import run_reporting_user_errors
from sepdense.deployment import (
    PRECISIONS,
    MissingDeployPackages,
    compare_logits,
    export_onnx,
    open_session,
    quantize_int8,
    read_deployed,
    require_deploy_packages,
    run_session,
)
from sepdense.evaluate import evaluate
from sepdense.export import export
from sepdense.models import DenseNet, ordered_conv_types
from sepdense.report.build import write_report
from sepdense.tables import format_value

onnx = pytest.importorskip("onnx")
TINY = {"block_config": [1, 1, 1, 1], "growth_rate": 4, "separable_mid_norm": True}


def tiny_net(conv: str) -> nn.Module:
    """A tiny network whose BatchNorms hold statistics away from their defaults, so that folding them shows."""
    torch.manual_seed(0)
    net = DenseNet(conv=conv, **TINY)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.2, 0.2)
    return net.eval()


def images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, 32, 32)).astype(np.float32)


@pytest.mark.parametrize("conv", ["standard", "separable"])
def test_exported_network_gives_pytorchs_logits_at_any_batch(conv: str, tmp_path: Path) -> None:
    net = tiny_net(conv)
    exported = export_onnx(net, tmp_path / "model.onnx")
    assert exported["batchnorms_folded"] == (9 if conv == "separable" else 4)  # 4 bottlenecks (+ 5 separable mid BNs)
    session = open_session(tmp_path / "model.onnx", threads=1)
    for batch in (1, 5):  # one file: the batch dimension is dynamic
        x = images(batch, seed=batch)
        with torch.no_grad():
            reference = net(torch.from_numpy(x)).numpy()
        # Tolerance: float32 rounding of the folded weights and of a different summation order.
        np.testing.assert_allclose(run_session(session, x), reference, rtol=1e-4, atol=1e-5 * np.abs(reference).max())


def test_int8_model_is_quantized_and_stays_close(tmp_path: Path) -> None:
    net = tiny_net("separable")
    export_onnx(net, tmp_path / "model.onnx")
    quantize_int8(tmp_path / "model.onnx", tmp_path / "model.int8.onnx", images(32, seed=1))
    model = onnx.load(tmp_path / "model.int8.onnx")
    ops = collections.Counter(node.op_type for node in model.graph.node)
    assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] > ops["QuantizeLinear"]
    assert any(init.data_type == onnx.TensorProto.INT8 for init in model.graph.initializer)  # int8 weights
    x = images(16, seed=2)
    with torch.no_grad():
        reference = net(torch.from_numpy(x)).numpy()
    logits = run_session(open_session(tmp_path / "model.int8.onnx"), x)
    assert logits.shape == (16, 10)
    close = compare_logits(reference, logits)
    assert close["max_logit_diff"] > 0 and close["max_logit_diff_relative"] < 0.1, close  # quantized, yet near


def test_a_missing_package_is_one_line_saying_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now raises ImportError
    with pytest.raises(SystemExit) as exit_info:
        run_reporting_user_errors(require_deploy_packages)
    err = capsys.readouterr().err
    assert exit_info.value.code == 1 and err.count("\n") == 1
    assert "onnxruntime is not installed" in err and 'pip install -e ".[deploy]"' in err
    with pytest.raises(MissingDeployPackages):
        benchmark_deploy(TINY, 4, 0.01, 4)


def test_deploy_level_has_a_row_per_conv_type_and_precision(tmp_path: Path) -> None:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="benchmark", overrides=[
            "levels=[deploy]", "model.block_config=[1,1,1,1]", "model.growth_rate=4", "deploy_level.batch=8",
            "deploy_level.min_run_time=0.01", "deploy_level.calibration_images=8"])  # fmt: skip
    GlobalHydra.instance().clear()
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path)
    results = run_benchmark(cfg)
    rows = results["levels"]["deploy"]
    # Timed precision by precision, the conv types side by side.
    assert [(r["conv"], r["precision"]) for r in rows] == [(c, p) for p in PRECISIONS for c in ordered_conv_types()]
    for row in rows:
        for key in ("file_mb", "latency_b1_1thread_ms", "images_per_s_b8", "session_peak_mb_b8"):
            assert row[key] > 0, (row, key)
    ratios = {(r["ratio"], r["precision"]): r for r in results["levels"]["deploy_comparison"]}
    for precision in PRECISIONS:
        separable = ratios[("separable ÷ standard", precision)]
        assert separable["mac_ratio"] < 1 and separable["latency_b1_1thread_ms_ratio"] > 0
    assert "Deployed: ONNX Runtime" in (tmp_path / "results.md").read_text()


def test_export_then_int8_evaluation_reach_the_runs_report(
    smoke_run: tuple, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    allocator_calls = []
    monkeypatch.setattr("sepdense.runtime.reuse_freed_memory", lambda: allocator_calls.append(1) or True)
    run_dir = tmp_path / "run"
    shutil.copytree(smoke_run[0], run_dir)  # the shared run is only read; this copy gets deployed.json
    export_dir, eval_dir = tmp_path / "export", tmp_path / "evaluate"
    export(entry_config("export", [f"ckpt_path={run_dir}", "quantize=int8", "calibration_images=64",
                                   "check_images=128"], export_dir))  # fmt: skip
    exported = json.loads((export_dir / "export.json").read_text())
    assert (
        exported["opset"] == 18 and (export_dir / "model.onnx").is_file() and (export_dir / "model.int8.onnx").is_file()
    )
    fp32 = exported["precisions"]["fp32"]
    assert fp32["top1_agreement"] == 1.0 and fp32["max_logit_diff_relative"] < 1e-4
    assert exported["precisions"]["int8"]["max_logit_diff"] > 0

    evaluate(entry_config("evaluate", [f"ckpt_path={run_dir}", "engine=onnxruntime", "quantize=int8",
                                       "calibration_images=64"], eval_dir))  # fmt: skip
    assert len(allocator_calls) == 2  # export and evaluate both run with reuse_freed_memory, as training does
    evaluated = json.loads((eval_dir / "metrics.json").read_text())
    trained = json.loads((run_dir / "metrics.json").read_text())
    assert {k for k in evaluated if k.startswith("test/")} == {k for k in trained if k.startswith("test/")}
    assert evaluated["engine"].startswith("onnxruntime int8") and "Engine: onnxruntime int8" in capsys.readouterr().out
    assert (eval_dir / "confusion_matrix.json").is_file() and (eval_dir / "test_predictions.npz").is_file()

    deployed = read_deployed(run_dir)
    assert deployed["int8"]["test/acc"] == evaluated["test/acc"] and deployed["fp32"]["latency_b1_ms"] > 0
    report = (write_report(run_dir) / "report.md").read_text()
    assert "## Deployed (ONNX Runtime)" in report and format_value(100 * evaluated["test/acc"]) in report

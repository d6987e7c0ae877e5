"""Evaluating a saved checkpoint: the entry point reproduces the run's own test, and load_from_checkpoint works."""

from __future__ import annotations

import json
from pathlib import Path

import hydra
import numpy as np
import pytest
import torch
from conftest import run_entry

from sepdense.module import ImageClassifier
from sepdense.runs import read_config, read_predictions


@pytest.fixture
def trained_run(smoke_run: tuple) -> Path:
    return smoke_run[0]


@pytest.mark.slow
def test_evaluating_a_run_gives_its_own_test_numbers(trained_run: Path, tmp_path: Path) -> None:
    # A data.<key> override applies to the run's own data (synthetic here), it does not swap in CIFAR-10.
    result = run_entry("-m", "sepdense.evaluate", f"ckpt_path={trained_run}", "data.eval_batch_size=100",
                       log_dir=tmp_path)  # fmt: skip
    (eval_dir,) = (tmp_path / "evaluate" / "runs").iterdir()
    trained = json.loads((trained_run / "metrics.json").read_text())
    evaluated = json.loads((eval_dir / "metrics.json").read_text())
    assert evaluated["checkpoint"] == trained["best_checkpoint"]  # a run directory means its best checkpoint
    test_keys = [k for k in trained if k.startswith("test/")]
    assert len(test_keys) >= 5 + 3 * 10  # loss, acc, macro P/R/F1 and per-class P/R/F1
    for key in test_keys:
        assert evaluated[key] == pytest.approx(trained[key], abs=1e-6), key
    for name in ("confusion_matrix.json",):
        assert json.loads((eval_dir / name).read_text()) == json.loads((trained_run / name).read_text())
    ours, theirs = read_predictions(eval_dir), read_predictions(trained_run)
    for name in ("index", "label", "pred"):
        np.testing.assert_array_equal(ours[name], theirs[name])
    assert "| test | 256 |" in result.stdout and "| class3 |" in result.stdout


@pytest.mark.slow
def test_a_checkpoint_loads_by_itself(trained_run: Path) -> None:
    module = ImageClassifier.load_from_checkpoint(trained_run / "checkpoints" / "best.ckpt", map_location="cpu")
    datamodule = hydra.utils.instantiate(read_config(trained_run).data)
    datamodule.setup()
    predictions = read_predictions(trained_run)
    images = datamodule.splits["test"][0][datamodule.source_index["test"].argsort()]  # back to the source's order
    with torch.no_grad():
        logits = module.eval()(datamodule.on_after_batch_transfer((images,), 0)[0])
    np.testing.assert_allclose(logits[predictions["index"]].numpy(), predictions["logits"], rtol=1e-2, atol=1e-2)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("ckpt_path=/no/such/run", "error: ckpt_path=/no/such/run does not exist"),
        ("", "error: ckpt_path is missing; give a run directory or a .ckpt file"),
        ("ckpt_path=TRUNCATED", "truncated.ckpt is not a readable checkpoint (truncated or damaged"),
        ("split=train", "error: split=train is not a split; use one of: test, val"),
        ("quantize=int8", "error: quantize=int8 runs the quantized model in ONNX Runtime; add engine=onnxruntime"),
        (
            "data=synthetic data.source.num_classes=5",
            "but the data has ['class0', 'class1', 'class2', 'class3', 'class4']; evaluate it on data with the same",
        ),
    ],
)
def test_evaluate_mistakes_end_in_one_line(override: str, message: str, trained_run: Path, tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes((trained_run / "checkpoints" / "best.ckpt").read_bytes()[:4096])  # a copy cut short
    if override.startswith("ckpt_path") or not override:
        args = [override.replace("TRUNCATED", str(truncated))] if override else []
    else:
        args = [f"ckpt_path={trained_run}", *override.split()]
    result = run_entry("-m", "sepdense.evaluate", *args, log_dir=tmp_path, check=False)
    assert result.returncode == 1 and message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not list((tmp_path / "evaluate" / "runs").glob("*"))  # a failed evaluation leaves no run directory

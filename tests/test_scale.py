"""Beyond one process: DDP through the real entry point, and the sweep launcher / search configs."""

from __future__ import annotations

import json
from pathlib import Path

import hydra
import pytest
import pytorch_lightning as pl
import torch
from conftest import CONF_DIR, ROOT, run_entry
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from sepdense.data.augment import normalize


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_computes_metrics_over_the_whole_split(tmp_path: Path) -> None:
    # debug=smoke without its trainer preset: an odd test split makes the two ranks' shards unequal (128 + 127).
    overrides = ["data=synthetic", "data.source.num_train=1024", "data.source.num_test=255", "data.val_size=256",
                 "data.batch_size=64", "data.eval_batch_size=64", "model.block_config=[2,2,2,2]",
                 "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true",
                 "trainer.max_epochs=1", "trainer.limit_train_batches=4", "callbacks.progress_bar=null"]  # fmt: skip
    run_entry("train.py", *overrides, log_dir=tmp_path)
    (run_dir,) = (tmp_path / "train" / "runs").iterdir()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    confusion = json.loads((run_dir / "confusion_matrix.json").read_text())["matrix"]
    assert sum(map(sum, confusion)) == 255  # every test image counted once, across both ranks

    # The logged test accuracy is that of the whole test split, recomputed here in one process.
    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.setup()
    net = hydra.utils.instantiate(cfg.model, num_classes=10)
    state = torch.load(metrics["best_checkpoint"], weights_only=False)["state_dict"]
    net.load_state_dict({k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")})
    images, labels = datamodule.splits["test"]
    with torch.no_grad():
        accuracy = (net.eval()(normalize(images)).argmax(1) == labels).float().mean().item()
    assert metrics["test/acc"] == pytest.approx(accuracy, abs=1e-6)


class NaNOnRankOne(pl.Callback):
    """Makes the second training batch's images NaN on rank 1 only: its loss is NaN, rank 0's is finite."""

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx: int) -> None:
        if trainer.global_rank == 1 and batch_idx == 1:
            batch[0].fill_(float("nan"))


@pytest.mark.slow
def test_ddp_ranks_agree_to_stop_on_a_non_finite_loss(tmp_path: Path) -> None:
    # Without agreement rank 1 stops at step 1 while rank 0, whose loss was finite, goes on and waits for
    # rank 1 in the next gradient all-reduce (or reports NaN one step later, from the weights it received).
    overrides = ["data=synthetic", "data.source.num_train=512", "data.source.num_test=64", "data.val_size=64",
                 "data.batch_size=32", "model.block_config=[1,1]", "model.growth_rate=4", "trainer=ddp",
                 "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true", "trainer.max_epochs=1",
                 "trainer.limit_train_batches=4", "trainer.log_every_n_steps=1", "callbacks.progress_bar=null",
                 "callbacks.model_cost=null",
                 "+callbacks.nan_on_rank_one._target_=test_scale.NaNOnRankOne"]  # fmt: skip
    result = run_entry("train.py", *overrides, log_dir=tmp_path, check=False,
                       env={"PYTHONPATH": str(ROOT / "tests")})  # fmt: skip
    assert result.returncode == 1, result.stderr[-3000:]
    stopped = "error: The train loss became NaN or infinite at epoch 0, step 1."
    assert result.stderr.count(stopped) == 2, result.stderr[-3000:]  # each rank, at the same step
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("override", "target"),
    [
        ("hydra/launcher=local_parallel", "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"),
        ("hydra/launcher=slurm", "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"),
        ("hparams_search=lr_wd", "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"),
    ],
)
def test_sweep_launcher_and_search_configs_compose(override: str, target: str) -> None:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[override], return_hydra_config=True)
    GlobalHydra.instance().clear()
    node = cfg.hydra.sweeper if "hparams_search" in override else cfg.hydra.launcher
    assert node._target_ == target
    if override == "hydra/launcher=slurm":
        assert cfg.hydra.launcher.gpus_per_node == 1 and cfg.hydra.launcher.timeout_min == 720
    if override == "hparams_search=lr_wd":
        assert set(cfg.hydra.sweeper.params) == {"optimizer.lr", "optimizer.weight_decay"}
        assert cfg.optimized_metric == "val/acc_best"

"""Fast training paths against the eager reference: the graphed step, the compiled network, the allocator."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from conftest import SMOKE, run_entry

from sepdense.checkpoints import load_checkpoint
from sepdense.data import CIFAR10DataModule, Synthetic
from sepdense.errors import ConfigError
from sepdense.module import ImageClassifier
from sepdense.optim import warmup_cosine

NET = {"_target_": "sepdense.models.DenseNet", "block_config": [2, 2, 2, 2], "growth_rate": 8}
# The smallest network with every kind of layer (stem, dense layer, transition, head): compiles in ~30 s.
TINY_NET = {"_target_": "sepdense.models.DenseNet", "block_config": [1, 1], "growth_rate": 4}
# The LR schedule's length, fixed: runs of 10 and 11 steps then differ by exactly one step of the same schedule.
HORIZON = 40


class Float64Data(CIFAR10DataModule):
    """The data module with its (float32) normalised images made float64, as Lightning's 64-true precision
    makes the network: Lightning converts a batch before this hook, where the images are still uint8."""

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        images, *rest = super().on_after_batch_transfer(batch, dataloader_idx)
        return (images.double(), *rest)


def train_steps(steps: int, accelerator: str = "cpu", precision: str = "32-true", conv: str = "separable",
                net: dict = NET, cuda_graph: bool = False, compile: str | bool = False,
                callbacks: tuple = ()) -> dict:  # fmt: skip
    """``steps`` optimizer steps of the real module on random data; returns the last loss, weights, BatchNorm
    statistics and batch counts, the LR and Lightning's step count."""
    pl.seed_everything(0, verbose=False)
    data_class = Float64Data if precision == "64-true" else CIFAR10DataModule
    datamodule = data_class(Synthetic(num_train=64 * steps + 64, num_test=64), val_size=64, batch_size=64)
    module = ImageClassifier(
        net={**net, "conv": conv},
        class_names=[str(i) for i in range(10)],
        # fused SGD on every path (the graphed one asks for it), so that only the paths differ, not the SGD kernels
        optimizer=lambda params, **kw: torch.optim.SGD(params, lr=0.1, momentum=0.9, nesterov=True,
                                                        weight_decay=5e-4, **{**kw, "fused": True}),
        scheduler=lambda opt, total_steps: warmup_cosine(opt, HORIZON, warmup_fraction=0.2),
        label_smoothing=0.1,
        compile=compile,
        cuda_graph=cuda_graph,
    )  # fmt: skip
    trainer = pl.Trainer(accelerator=accelerator, devices=1, precision=precision, max_steps=steps, max_epochs=1,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False, num_sanity_val_steps=0,
                         limit_val_batches=0, deterministic=accelerator == "cpu", benchmark=False,
                         callbacks=list(callbacks))  # fmt: skip
    trainer.fit(module, datamodule=datamodule)
    return {
        "loss": module._last_loss.detach().double().cpu(),
        "state": {k: v.detach().double().cpu().clone() for k, v in module.net.state_dict().items()},
        "lr": trainer.optimizers[0].param_groups[0]["lr"],
        "global_step": trainer.global_step,
    }


def assert_same_training(reference: dict, other: dict, rtol: float, atol: float) -> None:
    """Same step count, LR, last loss, weights, BatchNorm running statistics and their batch counts."""
    assert other["global_step"] == reference["global_step"]
    assert float(other["lr"]) == pytest.approx(float(reference["lr"]), rel=1e-12)
    torch.testing.assert_close(other["loss"], reference["loss"], rtol=rtol, atol=atol, msg="loss")
    for name, value in reference["state"].items():  # num_batches_tracked compares exactly: they are whole numbers
        torch.testing.assert_close(other["state"][name], value, rtol=rtol, atol=atol, msg=name)


def assert_one_step_shows(steps: dict, one_more: dict, rtol: float, atol: float) -> None:
    """The tolerance can tell ``steps`` from ``steps + 1`` by the loss and weights alone, BatchNorm's counts aside."""
    weights = [n for n, v in steps["state"].items() if v.is_floating_point() and "running" not in n
               and not n.endswith("num_batches_tracked")]  # fmt: skip
    apart = [n for n in weights if not torch.allclose(one_more["state"][n], steps["state"][n], rtol=rtol, atol=atol)]
    assert len(apart) > 0.9 * len(weights), f"only {len(apart)} of {len(weights)} weights resolve one step"
    assert not torch.allclose(one_more["loss"], steps["loss"], rtol=rtol, atol=atol)


@pytest.mark.parametrize("conv", ["separable", "standard"])
def test_the_graphed_step_path_trains_like_the_default_path_on_cpu(conv: str) -> None:
    # On a CPU the graphed path runs eagerly, through the same manual optimization and scheduler stepping
    # that a GPU replays: it must train exactly as Lightning's automatic path does, step for step.
    reference = train_steps(10, conv=conv, net=TINY_NET)
    assert_same_training(reference, train_steps(10, conv=conv, net=TINY_NET, cuda_graph=True), rtol=1e-6, atol=1e-7)
    assert_one_step_shows(reference, train_steps(11, conv=conv, net=TINY_NET), rtol=1e-6, atol=1e-7)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize(("cuda_graph", "compile"), [(True, False), (True, "default"), (False, "reduce-overhead")])
def test_graph_replayed_steps_equal_eager_steps_on_gpu(cuda_graph: bool, compile: str | bool) -> None:
    # In float64, where the compiled kernels' other summation order stays far below one step's change; the
    # graphed step warms up 3 steps, captures on the 4th and replays the other 16.
    torch.backends.cudnn.deterministic = True
    run = {"accelerator": "gpu", "precision": "64-true", "net": TINY_NET}
    reference = train_steps(20, **run)
    assert_same_training(reference, train_steps(20, **run, cuda_graph=cuda_graph, compile=compile), 1e-9, 1e-12)
    assert_one_step_shows(reference, train_steps(21, **run), rtol=1e-9, atol=1e-12)


@pytest.mark.slow
def test_smoke_run_with_a_compiled_network_inside_the_graphed_step(tmp_path: Path, smoke_run) -> None:
    # module.compile with module.cuda_graph: on a CPU the graphed step runs eagerly around the compiled network.
    result = run_entry("train.py", *SMOKE, "module.compile=default", "module.cuda_graph=true", log_dir=tmp_path,
                       env={"TORCH_LOGS": "recompiles"})  # fmt: skip
    # Two graphs, each compiled once: the training step, and evaluation (validation and test share
    # it). Measuring MACs and latency, or testing under inference_mode, would each add a compilation.
    assert result.stderr.count("Recompiling function") == 1, result.stderr[-3000:]
    (run_dir,) = (tmp_path / "train" / "runs").iterdir()
    eager_dir = smoke_run[0]
    metrics, eager = (json.loads((d / "metrics.json").read_text()) for d in (run_dir, eager_dir))
    # The same run as the eager smoke run: float32 compiled kernels sum in another order (~1% in some
    # BatchNorm gradients; measured 0.18% apart in train/loss), so the losses agree to 1%. A step lost or
    # doubled shows exactly in the step counts below; the float64 test checks the function tightly.
    for key in ("train/loss", "val/loss", "test/loss"):
        assert metrics[key] == pytest.approx(eager[key], rel=1e-2), key
    # The checkpoint of a compiled run has the plain parameter names, so it loads anywhere; and it counted
    # every step, in Lightning and in every BatchNorm, as the eager run did.
    checkpoint, eager_checkpoint = (load_checkpoint(d / "checkpoints" / "last.ckpt") for d in (run_dir, eager_dir))
    assert not [k for k in checkpoint["state_dict"] if "_orig_mod" in k]
    assert checkpoint["global_step"] == eager_checkpoint["global_step"] == 8
    counts = {k: int(v) for k, v in checkpoint["state_dict"].items() if k.endswith("num_batches_tracked")}
    assert counts and counts == {k: int(v) for k, v in eager_checkpoint["state_dict"].items() if k in counts}


@pytest.mark.slow
def test_compiled_training_steps_equal_eager_steps_on_cpu() -> None:
    # Ten steps through Lightning, the network compiled, with and without the graphed step (which runs
    # eagerly on a CPU), against eager: the same loss, weights, BatchNorm statistics and step counts.
    # In float64, so that the comparison can be tight: in float32 the compiled kernels sum in another
    # order, and BatchNorm's backward (a difference of nearly equal sums) turns that into ~1% relative
    # differences in some gradients, which would hide a real error as well as tolerate rounding.
    # Both compiled runs share one compilation (the same network and shapes).
    run = {"precision": "64-true", "net": TINY_NET}
    reference = train_steps(10, **run)
    for cuda_graph in (False, True):
        assert_same_training(reference, train_steps(10, **run, compile="default", cuda_graph=cuda_graph), 1e-9, 1e-12)
    assert_one_step_shows(reference, train_steps(11, **run), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("mode", ["reduce-overhead", "max-autotune"])
def test_compile_modes_with_cuda_graphs_of_their_own_are_refused_with_the_graphed_step(mode: str) -> None:
    with pytest.raises(ConfigError, match=rf"module\.compile={mode} records CUDA graphs of its own") as error:
        ImageClassifier(net={**NET, "conv": "standard"}, class_names=["a"], compile=mode, cuda_graph=True)
    assert "\n" not in str(error.value) and "module.compile=default or max-autotune-no-cudagraphs" in str(error.value)
    for allowed in ("default", "max-autotune-no-cudagraphs"):  # these run inside our graph
        assert ImageClassifier(net={**NET, "conv": "standard"}, class_names=["a"], compile=allowed, cuda_graph=True)
    assert ImageClassifier(net={**NET, "conv": "standard"}, class_names=["a"], compile=mode)  # alone, it is fine


def test_the_graphed_step_refuses_fp16(monkeypatch) -> None:
    # fp16 needs a gradient scaler around the backward; the graph has none and Lightning would then
    # unscale unscaled gradients (a 65,536× smaller step) without a word. A GPU is not needed to see
    # the refusal: it comes before anything is captured.
    module = ImageClassifier(net={**NET, "conv": "standard"}, class_names=["a", "b"], cuda_graph=True)
    monkeypatch.setattr(ImageClassifier, "trainer", SimpleNamespace(world_size=1, precision="16-mixed"))
    with pytest.raises(ConfigError, match=r"does not support trainer.precision=16-mixed; use bf16-mixed"):
        module.training_step((torch.randn(2, 3, 32, 32), torch.tensor([0, 1])), 0)


def test_reuse_freed_memory_stops_page_faults_of_repeated_large_allocations() -> None:
    script = """
import json, resource, sys, torch
from sepdense.runtime import reuse_freed_memory
if sys.argv[1] == "reuse":
    assert reuse_freed_memory()
def faults_of_one_step():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    activation = torch.ones(64 * 2**20 // 4)  # 64 MB, allocated and written
    total = activation.sum()
    del activation, total
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps([faults_of_one_step() for _ in range(10)]))
"""
    # The median of the last five steps: the heap takes a few steps to reach its working size (how
    # many varies from run to run), and training is ~400 steps an epoch in that steady state.
    faults = {mode: statistics.median(json.loads(subprocess.run([sys.executable, "-c", script, mode],
                                                                capture_output=True, text=True, check=True).stdout)[5:])
              for mode in ("default", "reuse")}  # fmt: skip
    assert faults["default"] > 10_000  # glibc maps 64 MB afresh every time: one fault per 4 kB page
    assert faults["reuse"] < 1_000  # the freed block is reused: no new pages


class StepLosses(pl.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer: pl.Trainer, module: ImageClassifier, *args: Any) -> None:
        self.losses.append(float(module._last_loss))


@pytest.mark.parametrize("conv", ["standard", "separable"])
def test_bf16_mixed_on_cpu_trains_like_fp32_over_the_first_steps(conv: str) -> None:
    """What trainer.precision=auto picks on a CPU with bf16 instructions is the same training: over the first 8
    steps every loss is within 0.02 (under 1%) of fp32's (measured: at most 0.007). bf16 rounding then compounds
    as the weights drift apart, as any change of summation order does."""
    fp32, bf16 = StepLosses(), StepLosses()
    train_steps(8, precision="32-true", conv=conv, callbacks=(fp32,))
    train_steps(8, precision="bf16-mixed", conv=conv, callbacks=(bf16,))
    gaps = [abs(a - b) for a, b in zip(fp32.losses, bf16.losses, strict=True)]
    assert len(gaps) == 8 and max(gaps) < 0.02
    assert max(gaps) > 0  # bf16 really ran: the losses are not bit-identical
    assert fp32.losses[-1] < fp32.losses[0] - 0.1 and bf16.losses[-1] < bf16.losses[0] - 0.1  # both learn

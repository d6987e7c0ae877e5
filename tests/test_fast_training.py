"""Fast training paths against the eager reference: the graphed step, the compiled network, the allocator."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch
from conftest import SMOKE, run_entry

from sepdense.data import CIFAR10DataModule, Synthetic
from sepdense.errors import ConfigError
from sepdense.module import ImageClassifier
from sepdense.optim import warmup_cosine

NET = {"_target_": "sepdense.models.DenseNet", "block_config": [2, 2, 2, 2], "growth_rate": 8}


def train_steps(steps: int, cuda_graph: bool, accelerator: str, precision: str, conv: str = "separable") -> dict:
    """``steps`` optimizer steps of the real module on random data; returns weights, BN statistics and the LR."""
    pl.seed_everything(0, verbose=False)
    datamodule = CIFAR10DataModule(Synthetic(num_train=64 * steps + 64, num_test=64), val_size=64, batch_size=64)
    module = ImageClassifier(
        net={**NET, "conv": conv},
        class_names=[str(i) for i in range(10)],
        optimizer=lambda params, **kw: torch.optim.SGD(params, lr=0.1, momentum=0.9, nesterov=True,
                                                        weight_decay=5e-4, **kw),
        scheduler=lambda opt, total_steps: warmup_cosine(opt, total_steps, warmup_fraction=0.2),
        label_smoothing=0.1,
        cuda_graph=cuda_graph,
    )  # fmt: skip
    trainer = pl.Trainer(accelerator=accelerator, devices=1, precision=precision, max_steps=steps, max_epochs=1,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False, num_sanity_val_steps=0,
                         limit_val_batches=0, deterministic=accelerator == "cpu", benchmark=False)  # fmt: skip
    trainer.fit(module, datamodule=datamodule)
    assert trainer.global_step == steps  # Lightning counted every step, whichever path took it
    return {
        "state": {k: v.detach().float().cpu().clone() for k, v in module.net.state_dict().items()},
        "lr": trainer.optimizers[0].param_groups[0]["lr"],
    }


def assert_same_training(reference: dict, other: dict, rtol: float, atol: float) -> None:
    assert float(other["lr"]) == pytest.approx(float(reference["lr"]), rel=1e-6)
    for name, value in reference["state"].items():  # weights and BatchNorm running statistics
        torch.testing.assert_close(other["state"][name], value, rtol=rtol, atol=atol, msg=name)


@pytest.mark.parametrize("conv", ["separable", "standard"])
def test_the_graphed_step_path_trains_like_the_default_path_on_cpu(conv: str) -> None:
    # On a CPU the graphed path runs eagerly, through the same manual optimization, fused SGD and
    # scheduler stepping that a GPU replays: it must train exactly as Lightning's automatic path does.
    reference = train_steps(6, cuda_graph=False, accelerator="cpu", precision="32-true", conv=conv)
    graphed = train_steps(6, cuda_graph=True, accelerator="cpu", precision="32-true", conv=conv)
    assert_same_training(reference, graphed, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("conv", ["separable", "standard"])
def test_twenty_graph_replayed_steps_equal_twenty_eager_steps_on_gpu(conv: str) -> None:
    torch.backends.cudnn.deterministic = True
    reference = train_steps(20, cuda_graph=False, accelerator="gpu", precision="bf16-mixed", conv=conv)
    graphed = train_steps(20, cuda_graph=True, accelerator="gpu", precision="bf16-mixed", conv=conv)
    assert_same_training(reference, graphed, rtol=2e-2, atol=2e-2)  # bf16 tolerance


@pytest.mark.slow
def test_smoke_run_with_a_compiled_network(tmp_path: Path) -> None:
    result = run_entry("train.py", *SMOKE, "module.compile=default", log_dir=tmp_path,
                       env={"TORCH_LOGS": "recompiles"})  # fmt: skip
    # Two graphs, each compiled once: the training step, and evaluation (validation and test share
    # it). Measuring MACs and latency, or testing under inference_mode, would each add a compilation.
    assert result.stderr.count("Recompiling function") == 1, result.stderr[-3000:]
    (run_dir,) = (tmp_path / "train" / "runs").iterdir()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0 <= metrics["test/acc"] <= 1 and metrics["time/train_images_per_s"] > 0
    # The checkpoint of a compiled run has the plain parameter names, so it loads anywhere.
    state = torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=False)["state_dict"]
    assert not [k for k in state if "_orig_mod" in k]


@pytest.mark.slow
def test_a_compiled_network_computes_what_the_eager_one_does() -> None:
    # In float64, so that the comparison can be tight: in float32 the compiled kernels sum in another
    # order, and BatchNorm's backward (a difference of nearly equal sums) turns that into ~1% relative
    # differences in some gradients, which would hide a real error as well as tolerate rounding.
    # A small network with every kind of layer (stem, dense layer, transition, head): compiles in ~30 s.
    torch.manual_seed(0)
    tiny_net = {"_target_": "sepdense.models.DenseNet", "block_config": [1, 1], "growth_rate": 4}
    classes = [str(i) for i in range(10)]
    eager = ImageClassifier(net=tiny_net, class_names=classes, channels_last=True)
    compiled = ImageClassifier(net=tiny_net, class_names=classes, channels_last=True, compile="default")
    eager.net.double()
    compiled.net.double()
    compiled.net.load_state_dict(eager.net.state_dict())
    images, labels = torch.randn(64, 3, 32, 32, dtype=torch.float64), torch.randint(0, 10, (64,))
    results = []
    for module in (eager, compiled):
        loss, logits = module.train().loss_and_logits(images, labels)
        loss.backward()
        grads = {n: p.grad for n, p in module.net.named_parameters()}
        results.append((logits.detach(), grads, {n: b.clone() for n, b in module.net.named_buffers()}))
    (logits, grads, buffers), (c_logits, c_grads, c_buffers) = results
    assert c_logits.dtype == torch.float64
    torch.testing.assert_close(c_logits, logits, rtol=1e-9, atol=1e-12)
    for name in grads:
        torch.testing.assert_close(c_grads[name], grads[name], rtol=1e-9, atol=1e-12, msg=name)
    for name in buffers:  # BatchNorm running statistics
        torch.testing.assert_close(c_buffers[name], buffers[name], rtol=1e-9, atol=1e-12, msg=name)


def test_compile_and_cuda_graph_together_are_refused() -> None:
    with pytest.raises(Exception, match=r"module\.cuda_graph=true and module\.compile=default both"):
        ImageClassifier(net={**NET, "conv": "standard"}, class_names=["a"], compile="default", cuda_graph=True)


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

"""What each run measured, for the report to say beside its numbers: the data set as the data module names it,
how many test images (and whether that is the whole test split), epochs done of planned, the precision, the
machine; and under which definition its peak memory was taken."""

from __future__ import annotations

import json
import re
import statistics
from typing import Any

from omegaconf import OmegaConf

from sepdense.report.aggregate import MEMORY
from sepdense.report.recipe import dataset, run_precision
from sepdense.runs import ENVIRONMENT_FILE, Run

# Test split sizes of the sources whose size the config does not say (the official CIFAR-10 test batch).
KNOWN_TEST_SPLIT = {"OfficialCIFAR10": 10_000}


def environment(run: Run) -> dict[str, Any]:
    """The run's environment.json (machine, versions), or {} when it saved none or it is unreadable."""
    try:
        value = json.loads((run.path / ENVIRONMENT_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def device(run: Run) -> str:
    """'gpu' or 'cpu': where the run trained, from its accelerator setting and the GPUs its machine had."""
    accelerator = str(OmegaConf.select(run.config, "trainer.accelerator", default="auto")) if run.config else "auto"
    if accelerator in ("gpu", "cuda"):
        return "gpu"
    if accelerator == "cpu":
        return "cpu"
    return "gpu" if environment(run).get("gpus") else "cpu"


def settle_costs(run: Run) -> None:
    """One figure per per-epoch cost, over all the run's epochs where its curves are saved (else its last epoch's):
    training time per epoch and images/s, the median (an epoch slowed by other work on the machine, or by a
    resume's start, moves it little); the peak memory, the largest (that of every process of a resumed run, also
    for runs saved before their checkpoints kept it), filed under the definition it was measured by on its device
    (see ``MEMORY``)."""
    if not run.metrics:
        return
    for tag in ("time/train_epoch_s", "time/train_images_per_s"):
        if run.curves.get(tag):
            run.metrics[tag] = statistics.median(value for _, value in run.curves[tag])
    if "memory/peak_mb" in run.metrics:
        logged = [value for _, value in run.curves.get("memory/peak_mb", [])]
        run.metrics[MEMORY[device(run)]] = max([run.metrics["memory/peak_mb"], *logged])


def machine(run: Run) -> str:
    """'NVIDIA H200' or 'Intel(R) Xeon(R) Processor, 2 threads', from environment.json; '?' when not saved."""
    env = environment(run)
    if device(run) == "gpu" and env.get("gpus"):
        return ", ".join(dict.fromkeys(map(str, env["gpus"])))
    if env.get("processor"):
        threads = env.get("cpu_threads")
        return f"{env['processor']}{f', {threads} threads' if threads else ''}"
    return "?"


def data_name(run: Run) -> str:
    """The data set by the data module's source class and, for files, the folder or archive it read."""
    kind, _, file = dataset(run).partition(":")
    return f"{kind} ({file})" if file else kind


def data_descriptions(runs: list[Run]) -> list[str]:
    """Each data set in full, as the data module described it beside the test predictions (seeds apart)."""
    described = (run.test_data("data_source") for run in runs)
    return list(dict.fromkeys(re.sub(r"seed=\d+(, )?|, seed=\d+(?=\))", "", d) for d in described if d))


def test_split_size(run: Run) -> int | None:
    """How many images the whole test split has, where the config or the source says; None where neither does."""
    if run.config is None:
        return None
    kind = str(OmegaConf.select(run.config, "data.source._target_", default="")).rsplit(".", 1)[-1]
    size = OmegaConf.select(run.config, "data.source.num_test", default=None)
    return int(size) if isinstance(size, int) else KNOWN_TEST_SPLIT.get(kind)


def test_images(run: Run) -> str:
    """'10,000' for the whole test split; '1,024 of 10,000 (a subset)'; with an unknown split size, a limit on test
    batches is named. '?' for a run that saved no predictions."""
    if run.predictions is None:
        return "?"
    tested = len(run.predictions["index"])
    total = test_split_size(run)
    limit = OmegaConf.select(run.config, "trainer.limit_test_batches", default=None) if run.config else None
    if total is not None:
        return f"{tested:,}" if tested >= total else f"{tested:,} of {total:,} (a subset)"
    if limit not in (None, 1.0):
        return f"{tested:,} (trainer.limit_test_batches={limit}: may be a subset)"
    return f"{tested:,}"


def is_subset(run: Run) -> bool:
    return "subset" in test_images(run)


def epochs(run: Run) -> str:
    if run.epochs_done is None:
        return "?"
    return f"{run.epochs_done}/{run.epochs_planned if run.epochs_planned is not None else '?'}"


def measured(runs: list[Run]) -> dict[str, str]:
    """What a cell of runs measured, each value joined over its runs where they differ."""

    def joined(values: list[str]) -> str:
        return "; ".join(dict.fromkeys(values)) or "?"

    return {
        "data": joined([data_name(r) for r in runs]),
        "test images": joined([test_images(r) for r in runs]),
        "epochs done / planned": joined([epochs(r) for r in runs]),
        "precision": joined(sorted({run_precision(r) for r in runs})),
        "machine": joined([machine(r) for r in runs]),
    }

"""Reports a person can read: curves, metrics and efficiency tables, trade-off plots and findings for a run or sweep.

`python -m sepdense.report <run-or-sweep-dir>` reads what the runs saved (metrics.json, the
TensorBoard event files, confusion_matrix.json, .hydra/config.yaml; nothing is re-trained) and
writes `<dir>/report/`: report.md, summary.csv, summary.json and PNG figures. The Hydra callback
`ReportCallback` does the same at the end of every run and every multirun.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from sepdense.bench.results import format_value, markdown_table

METRICS_FILE = "metrics.json"
CONFUSION_FILE = "confusion_matrix.json"
REPORT_DIR = "report"
CURVES = ("train/loss", "val/loss", "train/acc", "val/acc")
QUALITY = ("test/acc", "test/precision", "test/recall", "test/f1")
EFFICIENCY = (
    ("model/params", "parameters"),
    ("model/macs", "MACs / image"),
    ("time/train_images_per_s", "train images/s"),
    ("time/train_epoch_s", "train epoch (s)"),
    ("memory/peak_mb", "peak memory (MB)"),
    ("model/latency_b1_ms", "latency, batch 1 (ms)"),
    ("time/fit_s", "fit time (s)"),
)
CONV_COLORS = {"standard": "tab:blue", "separable": "tab:orange"}


@dataclass
class Run:
    """What one run left on disk."""

    path: Path
    name: str
    conv: str = "?"
    seed: int | None = None
    status: str = "complete"
    metrics: dict[str, Any] = field(default_factory=dict)
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    confusion: np.ndarray | None = None
    class_names: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.status == "complete"


def find_run_dirs(root: Path) -> list[Path]:
    """Run directories at or below ``root``: those with a Hydra ``.hydra/config.yaml``."""
    if (root / ".hydra" / "config.yaml").is_file():
        return [root]
    return sorted(p.parent.parent for p in root.glob("**/.hydra/config.yaml") if REPORT_DIR not in p.parts)


def read_curves(event_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Per-epoch values of the curve tags, as (epoch, value), read with TensorBoard's own event reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logging.getLogger("tensorboard").setLevel(logging.WARNING)  # it reports every event file it opens
    events = EventAccumulator(str(event_dir), size_guidance={"scalars": 0})
    events.Reload()
    tags = set(events.Tags().get("scalars", []))
    # Lightning logs the epoch beside every epoch-level metric, at the same global step.
    epoch_at = {e.step: int(e.value) for e in events.Scalars("epoch")} if "epoch" in tags else {}
    curves = {}
    for tag in CURVES:
        if tag in tags:
            points = {epoch_at.get(e.step, i): e.value for i, e in enumerate(events.Scalars(tag))}
            curves[tag] = sorted(points.items())  # a resumed epoch keeps its last value
    return curves


def load_run(path: Path, root: Path) -> Run:
    run = Run(path=path, name=str(path.relative_to(root)) if path != root else path.name)
    try:
        cfg = OmegaConf.load(path / ".hydra" / "config.yaml")
        run.conv = str(OmegaConf.select(cfg, "model.conv", default="?"))
        run.seed = OmegaConf.select(cfg, "seed", default=None)
        if (path / "tensorboard").is_dir():
            run.curves = read_curves(path / "tensorboard")
        if not (path / METRICS_FILE).is_file():
            run.status = "incomplete (no metrics.json: crashed or still running)"
            return run
        run.metrics = json.loads((path / METRICS_FILE).read_text())
        if (path / CONFUSION_FILE).is_file():
            saved = json.loads((path / CONFUSION_FILE).read_text())
            run.confusion, run.class_names = np.array(saved["matrix"]), list(saved["class_names"])
    except Exception as err:  # one unreadable run must not sink the report of the others
        run.status = f"broken ({type(err).__name__}: {err})"
    return run


def mean_std(values: list[float]) -> tuple[float, float]:
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def by_conv(runs: list[Run]) -> dict[str, list[Run]]:
    groups: dict[str, list[Run]] = {}
    for run in runs:
        if run.complete:
            groups.setdefault(run.conv, []).append(run)
    return dict(sorted(groups.items(), key=lambda kv: kv[0] != "standard"))


def aggregate(runs: list[Run], keys: list[str]) -> dict[str, dict[str, float]]:
    out = {}
    for key in keys:
        values = [r.metrics[key] for r in runs if isinstance(r.metrics.get(key), int | float)]
        if values:
            mean, std = mean_std(values)
            out[key] = {"mean": mean, "std": std, "n": len(values)}
    return out


def cell(stats: dict[str, float] | None, scale: float = 1.0, digits: int = 2) -> str:
    if stats is None:
        return "n/a"
    if stats["n"] == 1:
        return f"{stats['mean'] * scale:,.{digits}f}"
    return f"{stats['mean'] * scale:,.{digits}f} ± {stats['std'] * scale:,.{digits}f}"


def plot_run_curves(run: Run, path: Path) -> None:
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(11, 4))
    for tag in CURVES:
        if tag in run.curves:
            epochs, values = zip(*run.curves[tag], strict=True)
            ax = loss_ax if tag.endswith("loss") else acc_ax
            ax.plot(np.array(epochs) + 1, values, "o-" if len(values) < 20 else "-", label=tag, ms=3)
    for ax, title in ((loss_ax, "loss"), (acc_ax, "accuracy")):
        ax.set(xlabel="epoch", title=f"{run.name}: {title}")
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_conv_curves(groups: dict[str, list[Run]], path: Path) -> None:
    """Validation and training curves per conv type: mean across seeds with a min-max band."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for conv, runs in groups.items():
        for ax, kind in zip(axes, ("loss", "acc"), strict=True):
            for stage, style in (("train", "--"), ("val", "-")):
                series = [dict(r.curves[f"{stage}/{kind}"]) for r in runs if f"{stage}/{kind}" in r.curves]
                if not series:
                    continue
                epochs = sorted(set.intersection(*(set(s) for s in series)))
                values = np.array([[s[e] for e in epochs] for s in series])
                x = np.array(epochs) + 1
                color = CONV_COLORS.get(conv)
                marker = "o" if len(x) < 20 else None
                ax.plot(x, values.mean(0), style, marker=marker, color=color, label=f"{conv} {stage} (n={len(series)})")
                if len(series) > 1:
                    ax.fill_between(x, values.min(0), values.max(0), color=color, alpha=0.2)
    for ax, title in zip(axes, ("loss", "accuracy"), strict=True):
        ax.set(xlabel="epoch", title=f"{title}: dashed train, solid validation")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_tradeoff(runs: list[Run], path: Path) -> None:
    """Test accuracy against MACs, training time and parameters: one point per run."""
    axes_spec = (("model/macs", "forward MACs per image"), ("time/fit_s", "training time (s)"),
                 ("model/params", "parameters"))  # fmt: skip
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for ax, (key, label) in zip(axes, axes_spec, strict=True):
        for run in runs:
            if run.complete and key in run.metrics and "test/acc" in run.metrics:
                color = CONV_COLORS.get(run.conv, "gray")
                ax.scatter(run.metrics[key], 100 * run.metrics["test/acc"], color=color, s=40)
        ax.set(xlabel=label, ylabel="test accuracy (%)")
        ax.grid(alpha=0.3)
    handles = [plt.Line2D([], [], marker="o", ls="", color=c, label=k) for k, c in CONV_COLORS.items()]
    axes[0].legend(handles=handles)
    fig.suptitle("Accuracy against cost (one point per run)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_confusion(run: Run, path: Path) -> None:
    from sepdense.callbacks.confusion import confusion_figure

    acc = 100 * run.metrics.get("test/acc", float("nan"))
    fig = confusion_figure(run.confusion, run.class_names, f"{run.conv}: test confusion, best run ({acc:.2f}%)")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def findings(groups: dict[str, dict[str, dict[str, float]]]) -> str:
    """One paragraph of comparisons computed from the aggregated numbers."""

    def mean(conv: str, key: str) -> float | None:
        return groups.get(conv, {}).get(key, {}).get("mean")

    if "standard" in groups and "separable" in groups:
        parts = []
        for key, what in (("model/params", "the parameters"), ("model/macs", "the MACs"),
                          ("time/train_epoch_s", "the training time per epoch"),
                          ("memory/peak_mb", "the peak memory")):  # fmt: skip
            std, sep = mean("standard", key), mean("separable", key)
            if std and sep is not None:
                parts.append(f"{sep / std:.2f}× {what}")
        acc_std, acc_sep = mean("standard", "test/acc"), mean("separable", "test/acc")
        n_std, n_sep = groups["standard"]["test/acc"]["n"], groups["separable"]["test/acc"]["n"]
        if acc_std is not None and acc_sep is not None:
            parts.append(
                f"{100 * (acc_sep - acc_std):+.2f} points of test accuracy "
                f"({100 * acc_sep:.2f}% vs {100 * acc_std:.2f}%; means over {n_sep} separable and {n_std} standard "
                f"run{'s' if n_std > 1 else ''})"
            )
        return "Separable compared with standard convolutions: " + ", ".join(parts) + "."
    if groups:
        conv, stats = next(iter(groups.items()))
        acc = stats.get("test/acc")
        return (
            f"Only {conv} runs completed, so there is no comparison yet; test accuracy "
            f"{cell(acc, 100)}% over {acc['n'] if acc else 0} run(s)."
        )
    return "No run has completed yet, so there are no findings."


def write_report(root: Path) -> Path:
    """Write the report of the run or sweep in ``root`` into ``root/report`` and return that path."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a directory; give a run or sweep directory (e.g. logs/train/...).")
    out = root / REPORT_DIR
    (out / "curves").mkdir(parents=True, exist_ok=True)
    runs = [load_run(p, root) for p in find_run_dirs(root)]
    groups = by_conv(runs)
    quality_keys = list(QUALITY)
    class_names = next((r.class_names for r in runs if r.class_names), [])
    per_class_keys = [f"test/f1/{c}" for c in class_names]
    efficiency_keys = [k for k, _ in EFFICIENCY]
    stats = {conv: aggregate(rs, quality_keys + per_class_keys + efficiency_keys) for conv, rs in groups.items()}

    for run in runs:
        if run.curves:
            plot_run_curves(run, out / "curves" / f"{run.name.replace('/', '_')}.png")
    figures: list[tuple[str, str]] = []  # (file, caption)
    if groups:
        plot_conv_curves(groups, out / "curves_by_conv.png")
        plot_tradeoff(runs, out / "tradeoff.png")
        figures += [("curves_by_conv.png", "Learning curves per conv type"), ("tradeoff.png", "Accuracy against cost")]
    for conv, rs in groups.items():
        best = max(rs, key=lambda r: r.metrics.get("test/acc", -1))
        if best.confusion is not None:
            plot_confusion(best, out / f"confusion_{conv}.png")
            figures.append((f"confusion_{conv}.png", f"Test confusion matrix of the best {conv} run, {best.name}"))

    run_rows = [
        {"run": r.name, "conv": r.conv, "seed": r.seed, "status": r.status,
         **{k: r.metrics.get(k) for k in quality_keys + efficiency_keys}}
        for r in runs
    ]  # fmt: skip
    with open(out / "summary.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(run_rows[0]) if run_rows else ["run"])
        writer.writeheader()
        writer.writerows(run_rows)
    paragraph = findings(stats)
    with open(out / "summary.json", "w") as f:
        json.dump({"runs": run_rows, "by_conv": stats, "findings": paragraph}, f, indent=2)

    quality_table = [
        {"conv": conv, "runs": len(groups[conv]), **{k.split("/")[1]: cell(s.get(k), 100) for k in quality_keys}}
        for conv, s in stats.items()
    ]
    efficiency_table = [
        {
            "conv": conv,
            **{label: cell(s.get(k), 1, 0 if "params" in k or "macs" in k else 2) for k, label in EFFICIENCY},
        }
        for conv, s in stats.items()
    ]
    per_class_table = [{"class": c, **{conv: cell(s.get(f"test/f1/{c}"), 100) for conv, s in stats.items()}}
                       for c in class_names]  # fmt: skip
    status_table = [{"run": r.name, "conv": r.conv, "seed": r.seed, "status": r.status,
                     "test acc (%)": format_value(100 * r.metrics["test/acc"]) if "test/acc" in r.metrics else "-"}
                    for r in runs]  # fmt: skip
    lines = [
        f"# Report: {root.name}",
        "",
        f"Generated by `python -m sepdense.report {root}` from {len(runs)} run(s) "
        f"({sum(r.complete for r in runs)} complete). Accuracy figures are on the test split of the data each run "
        "was configured with (see each run's `.hydra/config.yaml`); values are mean ± std over seeds where there "
        "are several.",
        "",
        "## Findings",
        "",
        paragraph,
        "",
        "## Test metrics (%, macro-averaged precision, recall, F1)",
        "",
        markdown_table(quality_table) if quality_table else "(no complete run)\n",
        "## Efficiency (as logged by the runs)",
        "",
        markdown_table(efficiency_table) if efficiency_table else "(no complete run)\n",
        "## Per-class test F1 (%)",
        "",
        markdown_table(per_class_table) if per_class_table else "(no per-class metrics)\n",
        "## Figures",
        "",
        *[f"{caption}:\n\n![{caption}]({name})\n" for name, caption in figures],
        "",
        "Per-run learning curves are in `curves/`.",
        "",
        "## Runs",
        "",
        markdown_table(status_table) if status_table else "(no run found)\n",
    ]
    (out / "report.md").write_text("\n".join(lines))
    return out


class ReportCallback(Callback):
    """Hydra callback: writes the report after every single run and after every multirun."""

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._write(Path(config.hydra.run.dir))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._write(Path(config.hydra.sweep.dir))

    @staticmethod
    def _write(root: Path) -> None:
        if int(os.environ.get("LOCAL_RANK", "0")) > 0:  # DDP child processes re-run the script: one report
            return
        try:
            print(f"[sepdense] report: {write_report(root) / 'report.md'}")
        except Exception as err:  # the runs themselves are saved; a report problem must not look like a failed run
            print(f"[sepdense] could not write the report for {root} ({type(err).__name__}: {err}); "
                  f"run `python -m sepdense.report {root}` to retry.")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", type=Path, help="a run directory or a sweep directory of runs")
    args = parser.parse_args()
    try:
        out = write_report(args.directory)
    except FileNotFoundError as err:
        raise SystemExit(f"error: {err}") from None
    print((out / "report.md").read_text())
    print(f"\nReport written to {out}")


if __name__ == "__main__":
    main()

"""The report's deployed section: ONNX Runtime latency and the accuracy that survives export and int8, beside
PyTorch's, for runs that were exported; and which conv type is ahead at equal deployed latency.

Reads each run's ``deployed.json`` (written by ``python -m sepdense.export`` and by
``python -m sepdense.evaluate engine=onnxruntime [quantize=int8]``); runs without one are left out.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import matplotlib.pyplot as plt

from sepdense.deployment import PRECISIONS, QUANTIZATION, SESSION_LATENCY_METHOD, read_deployed
from sepdense.measure import LATENCY_METHOD
from sepdense.models import BASELINE_CONV
from sepdense.plotting import conv_colors, save_figure
from sepdense.report.tradeoff import Point, ahead_at_equal_cost, pareto_front
from sepdense.runs import Run
from sepdense.tables import format_value, markdown_table

FIGURE = "tradeoff_deployed.png"


def deployed_key(precision: str, name: str) -> str:
    """The run-metrics key of a deployed figure, e.g. ``deployed/int8/latency_b1_ms``."""
    return f"deployed/{precision}/{name}"


def add_deployed_metrics(runs: list[Run]) -> list[Run]:
    """Merge each run's deployed figures into its metrics (so that they can be a cost axis); the complete runs that
    have any (a run in progress enters no number of the report)."""
    exported = []
    for run in (r for r in runs if r.complete):
        deployed = read_deployed(run.path)
        for precision, values in deployed.items():
            for name in ("latency_b1_ms", "file_mb", "top1_agreement", "test/acc"):
                if name in values:
                    run.metrics[deployed_key(precision, name)] = values[name]
        if deployed:
            exported.append(run)
    return exported


def with_deployed_accuracy(conv_points: dict[str, list[Point]], precision: str) -> dict[str, list[Point]]:
    """The points with each run's test accuracy replaced by the one measured in ONNX Runtime at ``precision``;
    points without that measurement for every seed are left out."""
    key = deployed_key(precision, "test/acc")
    out: dict[str, list[Point]] = {}
    for conv, ps in conv_points.items():
        kept = [p for p in ps if p.has(key)]
        out[conv] = [Point(p.conv, p.setting, [dataclasses.replace(r, metrics={**r.metrics, "test/acc": r.metrics[key]})
                                               for r in p.runs]) for p in kept]  # fmt: skip
    return out


def plot_deployed_tradeoff(points_by_precision: dict[str, dict[str, list[Point]]]) -> plt.Figure:
    """Test accuracy in ONNX Runtime against its batch-1 latency, one panel per precision, with the Pareto fronts
    (chosen on validation accuracy) where a conv type has two settings or more."""
    fig, axes = plt.subplots(1, len(points_by_precision), figsize=(6 * len(points_by_precision), 4.5), squeeze=False)
    for ax, (precision, conv_points) in zip(axes[0], points_by_precision.items(), strict=True):
        colors, cost = conv_colors(conv_points), deployed_key(precision, "latency_b1_ms")
        for conv, ps in conv_points.items():
            ps = [p for p in ps if p.has(cost)]
            if not ps:
                continue
            ax.scatter([p.mean(cost) for p in ps], [100 * p.accuracy for p in ps], color=colors[conv], s=60,
                       edgecolor="black", lw=0.6, label=conv, zorder=3)  # fmt: skip
            front = pareto_front(ps, cost)
            if len(front) > 1:
                ax.plot([p.mean(cost) for p in front], [100 * p.accuracy for p in front], "-", color=colors[conv],
                        lw=1.5, label=f"{conv}: Pareto front")  # fmt: skip
        ax.set_xlabel(f"ONNX Runtime {precision} latency, batch 1, 1 thread (ms)")
        ax.set_ylabel("test accuracy in int8 (%)" if precision == "int8" else "test accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def deployed_section(out: Path, runs: list[Run], conv_points: dict[str, list[Point]]) -> str:
    """The markdown of the section (and its figure in ``out``); empty when no run was exported."""
    exported = add_deployed_metrics(runs)
    if not exported:
        return ""

    def pct(run: Run, key: str) -> str:
        return format_value(100 * run.metrics[key]) if key in run.metrics else "-"

    def ms(run: Run, key: str) -> str:
        return f"{run.metrics[key]:.2f}" if key in run.metrics else "-"

    rows = [{"run": r.name, "conv": r.conv, "test acc PyTorch (%)": pct(r, "test/acc"),
             **{f"test acc ORT {p} (%)": pct(r, deployed_key(p, "test/acc")) for p in PRECISIONS},
             "latency PyTorch (ms)": ms(r, "model/latency_b1_ms"),
             **{f"latency ORT {p} (ms)": ms(r, deployed_key(p, "latency_b1_ms")) for p in PRECISIONS},
             **{f"file {p} (MB)": ms(r, deployed_key(p, "file_mb")) for p in PRECISIONS}}
            for r in exported]  # fmt: skip
    by_precision = {"fp32": conv_points, "int8": with_deployed_accuracy(conv_points, "int8")}
    sentences = []
    for precision, ps in by_precision.items():
        cost = deployed_key(precision, "latency_b1_ms")
        for conv in ps:
            if conv != BASELINE_CONV and BASELINE_CONV in ps:
                sentence = ahead_at_equal_cost(ps[conv], ps[BASELINE_CONV], cost)
                if sentence:
                    sentences.append(sentence.replace(f"equal {cost}", f"equal ONNX Runtime {precision} latency"))
    save_figure(plot_deployed_tradeoff(by_precision), out / FIGURE, inside=out, dpi=120)
    caption = "Test accuracy against ONNX Runtime latency (fp32 accuracy as in PyTorch; int8 as measured in int8)"
    return "\n".join([
        "\n## Deployed (ONNX Runtime)",
        "",
        f"Runs exported with `python -m sepdense.export` and evaluated with `python -m sepdense.evaluate "
        f"engine=onnxruntime [quantize=int8]`. ONNX Runtime latency: {SESSION_LATENCY_METHOD}, 1 thread, on the "
        f"machine that exported the run; PyTorch latency: {LATENCY_METHOD}. int8: {QUANTIZATION}.",
        "",
        markdown_table(rows),
        *(sentences and ["", " ".join(sentences)]),
        "",
        f"{caption}:\n\n![{caption}]({FIGURE})\n",
    ])  # fmt: skip

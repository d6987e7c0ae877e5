"""PNG plots of the benchmark: the FLOPs-vs-time gap per layer, and the model-level trade-off."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def plot_layer_gap(comparison: list[dict], path: Path) -> None:
    """Separable ÷ standard per grid point: MACs (theory) vs measured forward+backward time, one panel per k."""
    kernels = sorted({r["k"] for r in comparison})
    fig, axes = plt.subplots(1, len(kernels), figsize=(6 * len(kernels), 4.5), squeeze=False)
    for ax, k in zip(axes[0], kernels, strict=True):
        for size in sorted({r["size"] for r in comparison}, reverse=True):
            points = sorted((r for r in comparison if r["k"] == k and r["size"] == size), key=lambda r: r["channels"])
            times = [r["forward_backward_time_ratio"] for r in points]
            ax.plot([r["channels"] for r in points], times, "o-", label=f"time, {size}px")
        # The MAC ratio depends only on channels and k, not on the image size.
        theory = sorted({(r["channels"], r["mac_ratio_theory"]) for r in comparison if r["k"] == k})
        ax.plot(*zip(*theory, strict=True), "--", color="gray", label="MACs: 1/C + 1/k²")
        ax.axhline(1, color="black", lw=0.8)
        ax.set(xscale="log", yscale="log", xlabel="channels (in = out)", ylabel="separable ÷ standard")
        ax.set_title(f"k={k}: separable ÷ standard, forward+backward")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_model_costs(rows: list[dict], path: Path) -> None:
    """Per conv type and setting: parameters, MACs and training images/s, as bars."""
    trained = [r for r in rows if not r.get("bn_folded")]
    labels = [
        f"{r['conv']}\n{r['precision']}{' CL' if r['channels_last'] else ''}{' compiled' if r['compile'] else ''}"
        for r in trained
    ]
    colors = ["tab:blue" if r["conv"] == "standard" else "tab:orange" for r in trained]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    for ax, key, title in zip(
        axes,
        ("params", "macs", "train_images_per_s"),
        ("parameters", "forward MACs per image", "training images/s"),
        strict=True,
    ):
        ax.bar(range(len(trained)), [r[key] for r in trained], color=colors)
        ax.set_xticks(range(len(trained)), labels, fontsize=7)
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)

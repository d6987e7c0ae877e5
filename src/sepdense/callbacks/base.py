"""The one interface through which a callback hands its final figures to the run's metrics.json."""

from __future__ import annotations

import pytorch_lightning as pl


class SummaryCallback(pl.Callback):
    """A callback whose final figures (e.g. ``time/fit_s``) belong in the run's metrics.

    Subclasses fill ``self.final``; ``train`` merges ``summary()`` of every such callback
    without knowing what it measures.
    """

    def __init__(self) -> None:
        self.final: dict[str, float] = {}

    def summary(self) -> dict[str, float]:
        return dict(self.final)

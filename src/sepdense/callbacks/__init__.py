"""Trainer callbacks of this project; Lightning's own (checkpointing, LR monitor, ...) are configured directly."""

from sepdense.callbacks.base import SummaryCallback
from sepdense.callbacks.confusion import ConfusionMatrixFigure
from sepdense.callbacks.epoch_log import EpochLog
from sepdense.callbacks.model_cost import ModelCost
from sepdense.callbacks.progress import EpochProgressBar
from sepdense.callbacks.resumption import Interruption, LastMetrics, TimeLimit
from sepdense.callbacks.timing import Timing

__all__ = [
    "ConfusionMatrixFigure",
    "EpochLog",
    "EpochProgressBar",
    "Interruption",
    "LastMetrics",
    "ModelCost",
    "SummaryCallback",
    "TimeLimit",
    "Timing",
]

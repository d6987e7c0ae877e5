"""Trainer callbacks of this project; Lightning's own (checkpointing, LR monitor, ...) are configured directly."""

from sepdense.callbacks.confusion import ConfusionMatrixFigure
from sepdense.callbacks.model_cost import ModelCost, count_macs, count_parameters
from sepdense.callbacks.timing import Timing

__all__ = ["ConfusionMatrixFigure", "ModelCost", "Timing", "count_macs", "count_parameters"]

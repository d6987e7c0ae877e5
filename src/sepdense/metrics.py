"""Classification metrics of one stage, accumulated on the device without a host synchronisation per batch.

torchmetrics' ready-made classification metrics read values back to the host on every update
(argument checks, ``bincount``), which stalls a GPU that is otherwise never waited for. Here each
batch only adds into a confusion matrix and a loss sum on the device (a ``torchmetrics.Metric``,
so reset and DDP reduction are torchmetrics'), and every figure is derived from them once per
epoch: accuracy, macro and per-class precision, recall and F1.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric

# The "no non-finite loss seen" value of ``nonfinite_step`` (a step number no run reaches).
NEVER = 2**62


class ClassificationStats(Metric):
    """Confusion matrix, mean loss and the first step with a non-finite loss, over one epoch of one stage.

    Conventions (those of torchmetrics and scikit-learn with ``zero_division=0``): a ratio with a
    zero denominator is 0; macro averages run over the classes that occur among the labels or the
    predictions. A class with no image in the evaluated subset is *absent*: its per-class
    figures are NaN (not 0), and callers leave them out.
    """

    full_state_update = False

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.add_state("confusion", torch.zeros(num_classes, num_classes, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("loss_sum", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("nonfinite_step", torch.tensor(NEVER), dist_reduce_fx="min")

    def update(self, logits: Tensor, labels: Tensor, loss: Tensor, step: int = 0) -> None:
        """Add a batch: ``loss`` is its mean loss; ``step`` is recorded if the loss is not finite."""
        preds = logits.argmax(1)
        cells = labels * self.num_classes + preds  # row: true class, column: predicted class
        self.confusion.view(-1).index_add_(0, cells, torch.ones_like(cells))
        self.loss_sum += loss.detach().double() * len(labels)
        self.count += len(labels)
        finite = torch.isfinite(loss.detach())
        self.nonfinite_step.copy_(torch.where(finite, self.nonfinite_step, torch.clamp(self.nonfinite_step, max=step)))

    def compute(self) -> dict[str, Tensor]:
        """``loss``, ``acc``, macro ``precision``/``recall``/``f1``, per-class vectors and the confusion matrix."""
        confusion = self.confusion.double()
        tp = confusion.diagonal()
        support, predicted = confusion.sum(1), confusion.sum(0)
        precision = _ratio(tp, predicted)
        recall = _ratio(tp, support)
        f1 = _ratio(2 * tp, support + predicted)
        occurs = (support + predicted) > 0
        present = support > 0
        absent = torch.full_like(precision, float("nan"))
        return {
            "loss": self.loss_sum / self.count.clamp(min=1),
            "acc": tp.sum() / self.count.clamp(min=1),
            "precision": precision[occurs].mean(),
            "recall": recall[occurs].mean(),
            "f1": f1[occurs].mean(),
            "precision_per_class": torch.where(present, precision, absent),
            "recall_per_class": torch.where(present, recall, absent),
            "f1_per_class": torch.where(present, f1, absent),
            "confusion": self.confusion.clone(),
        }


def _ratio(numerator: Tensor, denominator: Tensor) -> Tensor:
    return torch.where(denominator > 0, numerator / denominator.clamp(min=1), torch.zeros_like(numerator))

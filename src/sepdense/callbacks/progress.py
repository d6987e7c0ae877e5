"""Lightning's rich progress bar, with epochs counted as the epoch log lines count them."""

from __future__ import annotations

from pytorch_lightning.callbacks import RichProgressBar


class EpochProgressBar(RichProgressBar):
    """``Epoch 2/100`` for the second of 100 epochs (Lightning's own bar says ``Epoch 1/99``).

    On a terminal only: train.py drops progress bars when stdout is not one, and the epoch log
    lines (``EpochLog``) say the same there.
    """

    def _get_train_description(self, current_epoch: int) -> str:
        description = super()._get_train_description(current_epoch)
        if not description.startswith("Epoch "):  # a Lightning version that words its bar differently
            return description
        label = f"Epoch {current_epoch + 1}"
        if self.trainer.max_epochs is not None and self.trainer.max_epochs > 0:
            label += f"/{self.trainer.max_epochs}"
        return f"{label:{len(description)}}"  # keep Lightning's padding (no flicker beside "Validation")

"""Peak memory of one training step on CPU, measured in a fresh process (``python -m sepdense.bench.memory``).

A fresh process makes the peak resident set belong to this step alone; the figure reported is
the peak minus the resident set just before the step (model, optimizer state and data already
built), i.e. the activations, gradients and temporaries of one step.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import torch
from torch import nn

from sepdense.measure import current_rss_mb, peak_memory_mb
from sepdense.models import DenseNet
from sepdense.runtime import prepare_network, to_layout


def measure(model_kwargs: dict, batch: int, channels_last: bool) -> dict:
    net = prepare_network(DenseNet(**model_kwargs), channels_last)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    images, labels = to_layout(torch.randn(batch, 3, 32, 32), channels_last), torch.randint(0, 10, (batch,))
    before = current_rss_mb()
    nn.functional.cross_entropy(net(images), labels).backward()
    optimizer.step()
    peak = peak_memory_mb(torch.device("cpu"))
    return {"rss_before_mb": before, "peak_rss_mb": peak, "step_peak_mb": peak - before}


def measure_in_subprocess(model_kwargs: dict, batch: int, channels_last: bool) -> dict:
    """Run :func:`measure` in a fresh interpreter and return its result."""
    args = [sys.executable, "-m", "sepdense.bench.memory", json.dumps(model_kwargs), str(batch), str(channels_last)]
    out = subprocess.run(args, capture_output=True, text=True, check=True, timeout=600).stdout
    return json.loads(out.strip().splitlines()[-1])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model_kwargs", type=json.loads)
    parser.add_argument("batch", type=int)
    parser.add_argument("channels_last", choices=["True", "False"])
    a = parser.parse_args()
    print(json.dumps(measure(a.model_kwargs, a.batch, a.channels_last == "True")))

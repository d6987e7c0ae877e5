"""Inference-time BatchNorm folding: a BN that directly follows a conv is merged into that conv's weights.

In this pre-activation DenseNet (BN-ReLU-conv) most BNs follow a concatenation or sit before a
ReLU, where no folding is exact. Two do directly follow a conv and are folded:
- the bottleneck's ``norm2`` into its 1×1 ``conv1`` (every dense layer, both conv types);
- a separable conv's middle BN into its depth-wise conv (``separable_mid_norm=true``).
"""

from __future__ import annotations

import copy

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from sepdense.models.densenet import DenseLayer
from sepdense.models.layers import SeparableConv2d


def fold_batchnorms(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with every foldable BN merged into the conv before it."""
    folded = copy.deepcopy(model).eval()
    for module in folded.modules():
        if isinstance(module, DenseLayer) and module.bottleneck:
            module.conv1 = fuse_conv_bn_eval(module.conv1, module.norm2)
            module.norm2 = nn.Identity()
        if isinstance(module, SeparableConv2d) and isinstance(module.norm, nn.BatchNorm2d):
            module.depthwise = fuse_conv_bn_eval(module.depthwise, module.norm)
            module.norm = nn.Identity()
    return folded


def count_batchnorms(model: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())

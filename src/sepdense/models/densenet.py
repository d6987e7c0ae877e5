"""A CIFAR DenseNet (Huang et al., 2017): dense blocks joined by transitions; the k×k conv type is a parameter.

With ``block_config=(16, 16, 16)``, ``growth_rate=12``, bottleneck, ``compression=0.5`` and
``conv="standard"`` this is DenseNet-BC (L=100, k=12) exactly as its reference
implementations build it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sepdense.errors import ConfigError
from sepdense.models.layers import CONV_TYPES, SeparableConv2d, check_conv_type, create_conv2d, ordered_conv_types


class DenseLayer(nn.Module):
    """BN-ReLU-[1×1 conv to bn_size·k, BN-ReLU]-k×k conv to k new feature maps."""

    def __init__(
        self, in_channels: int, growth_rate: int, bn_size: int, bottleneck: bool, drop_rate: float, conv2d: partial
    ) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(in_channels)
        self.relu1 = nn.ReLU(inplace=True)
        if bottleneck:
            inner = bn_size * growth_rate
            # The bottleneck is already point-wise, so it is a plain 1×1 conv for both conv types.
            self.conv1 = nn.Conv2d(in_channels, inner, 1, bias=False)
            self.norm2 = nn.BatchNorm2d(inner)
            self.relu2 = nn.ReLU(inplace=True)
        else:
            inner = in_channels
        self.conv2 = conv2d(inner, growth_rate)
        self.drop_rate = drop_rate
        self.bottleneck = bottleneck

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu1(self.norm1(x))
        if self.bottleneck:
            out = self.relu2(self.norm2(self.conv1(out)))
        out = self.conv2(out)
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        return out


class DenseBlock(nn.ModuleDict):
    """``num_layers`` dense layers; each sees the concatenation of the block input and all earlier outputs."""

    def __init__(self, num_layers: int, in_channels: int, growth_rate: int, **layer_kwargs: object) -> None:
        super().__init__()
        for i in range(num_layers):
            self[f"denselayer{i + 1}"] = DenseLayer(in_channels + i * growth_rate, growth_rate, **layer_kwargs)

    def forward(self, x: Tensor) -> Tensor:
        features = [x]
        for layer in self.values():
            features.append(layer(torch.cat(features, 1)))
        return torch.cat(features, 1)


class Transition(nn.Sequential):
    """BN-ReLU-1×1 conv (channel compression) then 2×2 average pooling: halves the resolution."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.BatchNorm2d(in_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.AvgPool2d(2),
        )


class DenseNet(nn.Module):
    """DenseNet for small (32×32) images: k×k stem, dense blocks and transitions, BN-ReLU, global pool, linear."""

    def __init__(
        self,
        conv: str = "separable",
        block_config: Sequence[int] = (16, 16, 16, 8),
        growth_rate: int = 12,
        bottleneck: bool = True,
        bn_size: int = 4,
        compression: float = 0.5,
        drop_rate: float = 0.0,
        stem_channels: int | None = None,
        kernel_size: int = 3,
        num_classes: int = 10,
        in_channels: int = 3,
        separable_mid_norm: bool = False,
        stem: str = "same",
    ) -> None:
        super().__init__()
        check_conv_type(conv)
        stem_conv = conv if stem == "same" else stem
        if stem_conv not in CONV_TYPES:
            raise ConfigError(f"model.stem={stem!r} is not a stem choice; use same (the stem is a model.conv conv, the "
                              f"default) or a conv type: {', '.join(ordered_conv_types())}.")  # fmt: skip
        _check_architecture(block_config, growth_rate, bn_size, compression, drop_rate, kernel_size, num_classes)
        self.conv_type = conv
        conv2d = partial(create_conv2d, conv, kernel_size=kernel_size, mid_norm=separable_mid_norm)
        # DenseNet-BC starts from 2k channels (the paper's choice for the bottleneck-compressed nets).
        channels = stem_channels or 2 * growth_rate
        self.features = nn.Sequential()
        stem_conv2d = partial(create_conv2d, stem_conv, kernel_size=kernel_size, mid_norm=separable_mid_norm)
        self.features.add_module("stem", stem_conv2d(in_channels, channels))
        for i, num_layers in enumerate(block_config, start=1):
            block = DenseBlock(
                num_layers,
                channels,
                growth_rate,
                bn_size=bn_size,
                bottleneck=bottleneck,
                drop_rate=drop_rate,
                conv2d=conv2d,
            )
            self.features.add_module(f"denseblock{i}", block)
            channels += num_layers * growth_rate
            if i < len(block_config):
                out_channels = math.floor(channels * compression)
                self.features.add_module(f"transition{i}", Transition(channels, out_channels))
                channels = out_channels
        self.features.add_module("norm_final", nn.BatchNorm2d(channels))
        self.features.add_module("relu_final", nn.ReLU(inplace=True))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)
        self.num_features = channels
        self._init_weights()

    def _init_weights(self) -> None:
        """He initialisation by fan-in, the one rule that means the same for a grouped conv as for a dense one.

        A conv's output unit sums (in_channels / groups)·k² inputs, which is the fan-in PyTorch computes for
        any ``groups``; weights of std gain/√fan-in keep the signal's second moment from input to output
        (gain √2 behind a ReLU, as every conv here is, 1 for the point-wise half of a separable pair, whose
        input is the depth-wise output). Fan-out would not: for a depth-wise conv PyTorch counts
        out_channels·k² although each input channel feeds only k² outputs, which made its weights √C
        times too small and the separable arm's layers shrink the signal where the standard arm's grew it.
        """
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, SeparableConv2d):
                nn.init.kaiming_normal_(m.pointwise.weight, mode="fan_in", nonlinearity="linear")

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def _check_architecture(
    block_config: Sequence[int],
    growth_rate: int,
    bn_size: int,
    compression: float,
    drop_rate: float,
    kernel_size: int,
    num_classes: int,
) -> None:
    """Reject architecture numbers that cannot build a network, naming the key and what is allowed."""
    problems = []
    if len(block_config) == 0 or any(int(n) < 1 for n in block_config):
        problems.append(f"model.block_config={list(block_config)} must list at least one block of ≥1 layers")
    for key, value in (("growth_rate", growth_rate), ("bn_size", bn_size), ("num_classes", num_classes)):
        if int(value) < 1:
            problems.append(f"model.{key}={value} must be a positive integer")
    if not 0 < compression <= 1:
        problems.append(f"model.compression={compression} must be in (0, 1]")
    if not 0 <= drop_rate < 1:
        problems.append(f"model.drop_rate={drop_rate} must be in [0, 1)")
    if kernel_size < 1 or kernel_size % 2 == 0:
        problems.append(f"model.kernel_size={kernel_size} must be an odd positive integer")
    if problems:
        raise ConfigError("; ".join(problems) + ".")

"""The network and its conv factory (a registry of conv types, with ``standard`` as the baseline)."""

from sepdense.models.densenet import DenseBlock, DenseLayer, DenseNet, Transition
from sepdense.models.layers import (
    BASELINE_CONV,
    CONV_TYPES,
    SeparableConv2d,
    create_conv2d,
    ordered_conv_types,
    register_conv_type,
)

__all__ = [
    "BASELINE_CONV",
    "CONV_TYPES",
    "DenseBlock",
    "DenseLayer",
    "DenseNet",
    "SeparableConv2d",
    "Transition",
    "create_conv2d",
    "ordered_conv_types",
    "register_conv_type",
]

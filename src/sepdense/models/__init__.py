"""The network and its conv factory."""

from sepdense.models.densenet import DenseBlock, DenseLayer, DenseNet, Transition
from sepdense.models.layers import CONV_TYPES, SeparableConv2d, create_conv2d

__all__ = ["CONV_TYPES", "DenseBlock", "DenseLayer", "DenseNet", "SeparableConv2d", "Transition", "create_conv2d"]

"""sepdense: DenseNet on CIFAR-10 with standard vs depthwise-separable convolutions."""

__version__ = "0.1.0"

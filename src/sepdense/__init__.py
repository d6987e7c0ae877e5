"""sepdense: DenseNet on CIFAR-10 with standard vs depthwise-separable convolutions."""

from sepdense import resolvers

__version__ = "0.1.0"

# The configs' resolvers must exist before Hydra composes them; any import of sepdense registers them.
resolvers.register()

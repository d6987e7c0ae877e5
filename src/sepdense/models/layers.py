"""The conv factory: every spatial (k×k, k>1) convolution of the network is built here, by name."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from torch import Tensor, nn

from sepdense.errors import ConfigError


class SeparableConv2d(nn.Module):
    """Depth-wise k×k conv (one filter per input channel) followed by a point-wise 1×1 conv.

    ``mid_norm`` puts a BatchNorm between the two (MobileNet style). It is off by default:
    in a pre-activation DenseNet every conv is already preceded by BN-ReLU, and without an
    extra norm the two convs together are exactly a low-rank factorisation of one k×k conv
    (Xception found no benefit from an activation in between).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int | None = None,
        bias: bool = False,
        mid_norm: bool = False,
    ) -> None:
        super().__init__()
        padding = kernel_size // 2 if padding is None else padding
        self.depthwise = nn.Conv2d(
            in_channels, in_channels, kernel_size, stride, padding, groups=in_channels, bias=False
        )
        self.norm = nn.BatchNorm2d(in_channels) if mid_norm else nn.Identity()
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.pointwise(self.norm(self.depthwise(x)))


def _standard(
    in_channels: int, out_channels: int, kernel_size: int, stride: int, padding: int, bias: bool, mid_norm: bool
) -> nn.Module:
    # mid_norm belongs to the separable pair; a single conv has no "between".
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=bias)


# A builder takes (in_channels, out_channels, kernel_size, stride, padding, bias, mid_norm) and returns the module.
ConvBuilder = Callable[[int, int, int, int, int, bool, bool], nn.Module]

# The registry of conv types, in the order reports and benchmarks show them. Every comparison
# (benchmark ratios, report findings, plot colours) iterates over it and sets each type against
# BASELINE_CONV, so a type registered here is trained, measured and reported with no other edit.
BASELINE_CONV = "standard"
CONV_TYPES: dict[str, ConvBuilder] = {}


def register_conv_type(name: str, builder: ConvBuilder) -> None:
    """Make ``model.conv=<name>`` build every k×k convolution of the network with ``builder``."""
    CONV_TYPES[name] = builder


register_conv_type(BASELINE_CONV, _standard)
register_conv_type("separable", SeparableConv2d)


def ordered_conv_types(names: Iterable[str] = ()) -> list[str]:
    """The registered conv types, baseline first, then any other ``names`` (e.g. read from old runs) sorted."""
    registered = [BASELINE_CONV, *(c for c in CONV_TYPES if c != BASELINE_CONV)]
    return registered + sorted(set(names) - set(registered))


def check_conv_type(conv: str) -> str:
    """Return ``conv`` if it names a known conv type, else raise a ConfigError that lists them."""
    if conv not in CONV_TYPES:
        raise ConfigError(
            f"model.conv={conv!r} is not a conv type; use one of: {', '.join(ordered_conv_types())} "
            f"(e.g. `python train.py model.conv=separable`)."
        )
    return conv


def create_conv2d(
    conv: str,
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    stride: int = 1,
    padding: int | None = None,
    bias: bool = False,
    mid_norm: bool = False,
) -> nn.Module:
    """Build one k×k convolution of the named type; 'same' padding unless ``padding`` is given."""
    padding = kernel_size // 2 if padding is None else padding
    return CONV_TYPES[check_conv_type(conv)](in_channels, out_channels, kernel_size, stride, padding, bias, mid_norm)

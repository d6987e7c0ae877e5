"""The DenseNet architecture and the conv factory: reference parameter count, separable structure, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sepdense.errors import ConfigError
from sepdense.models import DenseNet, SeparableConv2d, create_conv2d
from sepdense.models.densenet import DenseLayer

# DenseNet-BC (L=100, k=12) on CIFAR-10: the paper's Table 2 gives 0.8M; the reference PyTorch
# implementations (bias-free convs, BN affine parameters, a linear classifier with bias) give exactly this.
DENSENET_BC_100_K12_PARAMS = 769_162


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def spatial_convs(model: nn.Module) -> list[nn.Conv2d]:
    return [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size != (1, 1)]


def test_densenet_bc_100_has_the_reference_parameter_count() -> None:
    model = DenseNet(conv="standard", block_config=(16, 16, 16), growth_rate=12, bottleneck=True, compression=0.5)
    assert n_params(model) == DENSENET_BC_100_K12_PARAMS
    assert len(spatial_convs(model)) == 1 + 48  # stem + one 3×3 per dense layer
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_default_model_has_four_dense_blocks_and_at_most_1m_parameters() -> None:
    for conv in ("standard", "separable"):
        model = DenseNet(conv=conv)
        names = [name for name, _ in model.features.named_children()]
        assert [n for n in names if n.startswith("denseblock")] == [f"denseblock{i}" for i in range(1, 5)]
        assert [n for n in names if n.startswith("transition")] == [f"transition{i}" for i in range(1, 4)]
        assert n_params(model) <= 1_000_000
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_separable_convs_are_depthwise_then_pointwise() -> None:
    model = DenseNet(conv="separable", block_config=(2, 2, 2, 2))
    separable = [m for m in model.modules() if isinstance(m, SeparableConv2d)]
    assert len(separable) == 1 + 8  # the stem and every dense layer's k×k conv
    for conv in separable:
        dw, pw = conv.depthwise, conv.pointwise
        assert dw.kernel_size == (3, 3) and dw.groups == dw.in_channels == dw.out_channels
        assert pw.kernel_size == (1, 1) and pw.groups == 1 and pw.in_channels == dw.out_channels
    # Every k×k conv anywhere in the network is one of those depth-wise convs.
    assert {id(m) for m in spatial_convs(model)} == {id(c.depthwise) for c in separable}


def test_the_two_variants_differ_only_in_the_conv() -> None:
    def tree(model: nn.Module) -> list[tuple[str, str]]:
        # Module names and types, with each spatial conv collapsed to one "conv" node.
        out = []
        for name, module in model.named_modules():
            if any(name.startswith(f"{p}.") for p, _ in out if p and _ == "conv"):
                continue
            is_conv = isinstance(module, SeparableConv2d) or (
                isinstance(module, nn.Conv2d) and module.kernel_size != (1, 1)
            )
            out.append((name, "conv" if is_conv else type(module).__name__))
        return out

    standard = DenseNet(conv="standard", block_config=(3, 3, 3, 3))
    separable = DenseNet(conv="separable", block_config=(3, 3, 3, 3))
    assert tree(standard) == tree(separable)
    non_conv = lambda m: [  # noqa: E731
        (n, p.shape) for n, p in m.named_parameters() if "conv2" not in n and not n.startswith("features.stem")
    ]
    assert non_conv(standard) == non_conv(separable)


def test_separable_mid_norm_puts_a_batchnorm_between() -> None:
    conv = create_conv2d("separable", 8, 16, 3, mid_norm=True)
    assert isinstance(conv.norm, nn.BatchNorm2d) and conv.norm.num_features == 8
    assert conv(torch.randn(2, 8, 5, 5)).shape == (2, 16, 5, 5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"conv": "dephtwise"}, r"model.conv='dephtwise' is not a conv type; use one of: standard, separable"),
        ({"growth_rate": 0}, r"model.growth_rate=0 must be a positive integer"),
        ({"block_config": []}, r"model.block_config=\[\] must list at least one block"),
        ({"compression": 1.5}, r"model.compression=1.5 must be in \(0, 1\]"),
        ({"stem": "depthwise"}, r"model.stem='depthwise' is not a stem choice; use same .* standard, separable"),
    ],
)
def test_bad_architecture_values_are_named(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        DenseNet(**kwargs)


@pytest.mark.parametrize("conv", ["standard", "separable"])
def test_stem_can_be_chosen_apart_from_the_blocks(conv: str) -> None:
    same, standard = DenseNet(conv=conv, block_config=(1, 1)), DenseNet(conv=conv, block_config=(1, 1), stem="standard")
    assert isinstance(same.features.stem, SeparableConv2d if conv == "separable" else nn.Conv2d)
    assert type(standard.features.stem) is nn.Conv2d and standard.features.stem.weight.shape == (24, 3, 3, 3)
    # Only the stem differs: every dense layer's k×k conv is still of the model's conv type.
    layer_convs = lambda m: [type(layer.conv2) for layer in m.modules() if isinstance(layer, DenseLayer)]  # noqa: E731
    assert layer_convs(same) == layer_convs(standard)


def growth_of_second_moment(conv: str, seeds: int = 4) -> float:
    """Geometric mean over dense layers and initialisation seeds of E[k×k conv output²] / E[its input²]."""
    logs = []
    for seed in range(seeds):
        torch.manual_seed(seed)
        net = DenseNet(conv=conv, block_config=(2, 2, 2, 2))
        for layer in (m for m in net.modules() if isinstance(m, DenseLayer)):
            x = torch.randn(32, layer.norm1.num_features, 8, 8)
            with torch.no_grad():
                h = layer.relu2(layer.norm2(layer.conv1(layer.relu1(layer.norm1(x)))))
                logs.append(torch.log(layer.conv2(h).pow(2).mean() / h.pow(2).mean()))
    return float(torch.stack(logs).mean().exp())


def test_both_conv_types_are_initialised_by_one_variance_preserving_rule() -> None:
    """He fan-in: behind a ReLU a k×k conv doubles the second moment of its (rectified) input, less what the
    zero padding of 8×8 maps loses, for a depth-wise + point-wise pair as for one conv. (Fan-out init gave
    6.6× for standard and 0.27× for separable: a 24-fold gap in the scale the weights start at.)"""
    standard, separable = growth_of_second_moment("standard"), growth_of_second_moment("separable")
    assert 1.2 < standard < 2.2 and 1.2 < separable < 2.2
    assert abs(separable / standard - 1) < 0.15

"""The paper's networks: parameter counts against published numbers, output shapes."""
from __future__ import annotations

import pytest
import torch

from pskd.vision_cls.models import MODELS, build_model, count_parameters

# (model, classes, expected count, published figure it must round to, source)
PUBLISHED = [
    ("preact_resnet18", 100, 11_217_444, 11.2e6, "PreAct ResNet-18, CIFAR-100 (PS-KD code without its unused heads)"),
    ("resnet101_cifar", 10, 42_512_970, 42.5e6, "ResNet-101 CIFAR stem, 10 classes (kuangliu/pytorch-cifar 42.5M)"),
    ("resnet101_cifar", 100, 42_697_380, 42.7e6, "ResNet-101 CIFAR stem, CIFAR-100"),
    ("densenet121_cifar", 10, 6_956_298, 7.0e6, "DenseNet-121 k=32 CIFAR (kuangliu 6.96M)"),
    ("densenet121_cifar", 100, 7_048_548, 7.0e6, "DenseNet-121 k=32 CIFAR-100"),
    ("resnext29_8x64d", 10, 34_426_698, 34.4e6, "ResNeXt-29 8x64d (Xie et al. 2017, Table 7: 34.4M)"),
    ("pyramidnet200_a240", 100, 26_844_952, 26.8e6, "PyramidNet-200 a240 bottleneck (CutMix paper: 26.8M)"),
    ("resnet152", 1000, 60_192_808, 60.2e6, "torchvision ResNet-152 (60.2M)"),
]


@pytest.mark.parametrize("name, classes, exact, published, source", PUBLISHED,
                         ids=[p[0] + str(p[1]) for p in PUBLISHED])
def test_parameter_counts(name, classes, exact, published, source):
    n = count_parameters(build_model(name, classes, 3))
    assert n == exact, source
    assert round(n / 1e5) == round(published / 1e5), source


@pytest.mark.parametrize("name", ["small_cnn", "tiny_cnn", "preact_resnet18"])
@pytest.mark.parametrize("channels, size", [(1, 28), (3, 32)])
def test_output_shape_grey_and_colour(name, channels, size):
    torch.manual_seed(0)
    model = build_model(name, 10, channels).eval()
    with torch.no_grad():
        out = model(torch.randn(2, channels, size, size))
    assert out.shape == (2, 10) and torch.isfinite(out).all()


def test_registry_and_unknown_name():
    assert {"preact_resnet18", "resnet101_cifar", "densenet121_cifar", "resnext29_8x64d", "pyramidnet200_a240",
            "resnet152", "small_cnn"} <= set(MODELS)
    with pytest.raises(ValueError, match="unknown model.name 'vgg'"):
        build_model("vgg", 10)

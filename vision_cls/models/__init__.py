"""The networks ``pskd-cls`` can build, by name: ``build_model(name, num_classes, in_channels)``.

CIFAR networks of the PS-KD paper (32x32 inputs; global average pooling lets them take 28x28 too), torchvision's
ImageNet ResNets, and small CPU nets.
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from .densenet import densenet121_cifar
from .preact_resnet import preact_resnet18
from .pyramidnet import pyramidnet200_a240
from .resnet_cifar import resnet101_cifar
from .resnext import resnext29_8x64d
from .small import small_cnn, tiny_cnn

__all__ = ["MODELS", "build_model", "count_parameters"]


def _torchvision(name: str) -> Callable[..., nn.Module]:
    def build(num_classes: int = 1000, in_channels: int = 3) -> nn.Module:
        import torchvision

        model = getattr(torchvision.models, name)(weights=None, num_classes=num_classes)
        if in_channels != 3:  # grey-scale inputs: same stem shape, fewer input channels
            model.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        return model

    build.__doc__ = f"torchvision {name} (ImageNet stem: 7x7/2 conv + max-pool), randomly initialised."
    return build


MODELS: dict[str, Callable[..., nn.Module]] = {
    "preact_resnet18": preact_resnet18,
    "resnet101_cifar": resnet101_cifar,
    "densenet121_cifar": densenet121_cifar,
    "resnext29_8x64d": resnext29_8x64d,
    "pyramidnet200_a240": pyramidnet200_a240,
    "resnet152": _torchvision("resnet152"),
    "resnet50": _torchvision("resnet50"),
    "resnet18": _torchvision("resnet18"),
    "small_cnn": small_cnn,
    "tiny_cnn": tiny_cnn,
}


def build_model(name: str, num_classes: int, in_channels: int = 3) -> nn.Module:
    """Build a registered network; raises ValueError for an unknown name."""
    if name not in MODELS:
        raise ValueError(f"unknown model.name {name!r}; choose one of {', '.join(MODELS)}")
    return MODELS[name](num_classes=num_classes, in_channels=in_channels)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

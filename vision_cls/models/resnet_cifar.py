"""ResNet-101 with a CIFAR stem (bottleneck blocks [3, 4, 23, 3]), the PS-KD paper's "ResNet-101" on CIFAR-100.

A 3x3 stride-1 stem conv with BN-ReLU (no max-pool) replaces ImageNet's 7x7/2 stem, so 32x32 inputs reach the last
stage at 4x4. Post-activation bottlenecks (1x1, 3x3, 1x1 x4) with projection shortcuts (1x1 conv + BN).
42.70M parameters for 100 classes.
"""
from __future__ import annotations

from torch import nn

from .cifar_resnet_base import CifarStemNet, PostActBottleneck

__all__ = ["Bottleneck", "CifarResNet", "resnet101_cifar"]


class Bottleneck(PostActBottleneck):
    """1x1 (width) - 3x3 (width, stride) - 1x1 (4 x width)."""

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int = 1):
        super().__init__(cin, width, width * self.expansion, stride)


class CifarResNet(CifarStemNet):
    """Bottleneck ResNet with a CIFAR stem; ``blocks`` per stage of widths 64, 128, 256, 512 (x4 out)."""

    def __init__(self, blocks=(3, 4, 23, 3), num_classes: int = 100, in_channels: int = 3):
        super().__init__(in_channels)
        stages, cin = [], 64
        for i, (n, width) in enumerate(zip(blocks, (64, 128, 256, 512))):
            layers = []
            for j in range(n):
                layers.append(Bottleneck(cin, width, stride=2 if i > 0 and j == 0 else 1))
                cin = width * Bottleneck.expansion
            stages.append(nn.Sequential(*layers))
        self.finish(stages, cin, num_classes)


def resnet101_cifar(num_classes: int = 100, in_channels: int = 3) -> CifarResNet:
    return CifarResNet((3, 4, 23, 3), num_classes, in_channels)

"""PreAct ResNet-18 for 32x32 inputs (He et al. 2016, "Identity mappings"), as used for the PS-KD CIFAR-100 rows.

Shape of the PS-KD paper's network: a 3x3 stem conv with BN-ReLU, four stages of two pre-activation basic blocks
(64, 128, 256, 512 channels; strides 1, 2, 2, 2), global average pooling and a linear classifier. The official
code also builds two unused "teacher" linear heads; they never touch the output and are left out here, so the
count is the network's own: 11.22M parameters for 100 classes.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .cifar_resnet_base import CifarStemNet

__all__ = ["PreActBlock", "PreActResNet", "preact_resnet18"]


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-conv3x3; the projection shortcut (1x1 conv) takes the pre-activated input."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), conv3x3(cin, cout, stride)
        self.bn2, self.conv2 = nn.BatchNorm2d(cout), conv3x3(cout, cout)
        self.shortcut = nn.Conv2d(cin, cout, 1, stride=stride, bias=False) if stride != 1 or cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv2(F.relu(self.bn2(self.conv1(out))))
        return out + shortcut


class PreActResNet(CifarStemNet):
    """CIFAR-stem PreAct ResNet.

    Args:
        blocks: blocks per stage, e.g. (2, 2, 2, 2) for ResNet-18.
        num_classes: output classes.
        in_channels: input image channels (3 for CIFAR, 1 for (Fashion-)MNIST).
    """

    def __init__(self, blocks=(2, 2, 2, 2), num_classes: int = 100, in_channels: int = 3):
        super().__init__(in_channels)
        stages, cin = [], 64
        for i, (n, width) in enumerate(zip(blocks, (64, 128, 256, 512))):
            layers = []
            for j in range(n):
                layers.append(PreActBlock(cin, width, stride=2 if i > 0 and j == 0 else 1))
                cin = width
            stages.append(nn.Sequential(*layers))
        self.finish(stages, 512, num_classes)


def preact_resnet18(num_classes: int = 100, in_channels: int = 3) -> PreActResNet:
    return PreActResNet((2, 2, 2, 2), num_classes, in_channels)

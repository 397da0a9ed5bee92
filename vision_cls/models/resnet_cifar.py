"""ResNet-101 with a CIFAR stem (bottleneck blocks [3, 4, 23, 3]), the PS-KD paper's "ResNet-101" on CIFAR-100.

A 3x3 stride-1 stem conv with BN-ReLU (no max-pool) replaces ImageNet's 7x7/2 stem, so 32x32 inputs reach the last
stage at 4x4. Post-activation bottlenecks (1x1, 3x3, 1x1 x4) with projection shortcuts (1x1 conv + BN).
42.70M parameters for 100 classes.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Bottleneck", "CifarResNet", "resnet101_cifar"]


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, width: int, stride: int = 1):
        super().__init__()
        cout = width * self.expansion
        self.conv1, self.bn1 = nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width)
        self.conv3, self.bn3 = nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + (self.shortcut(x) if self.shortcut is not None else x))


class CifarResNet(nn.Module):
    """Bottleneck ResNet with a CIFAR stem; ``blocks`` per stage of widths 64, 128, 256, 512 (x4 out)."""

    def __init__(self, blocks=(3, 4, 23, 3), num_classes: int = 100, in_channels: int = 3):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64)
        stages, cin = [], 64
        for i, (n, width) in enumerate(zip(blocks, (64, 128, 256, 512))):
            layers = []
            for j in range(n):
                layers.append(Bottleneck(cin, width, stride=2 if i > 0 and j == 0 else 1))
                cin = width * Bottleneck.expansion
            stages.append(nn.Sequential(*layers))
        self.layers = nn.Sequential(*stages)
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(F.relu(self.bn1(self.conv1(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


def resnet101_cifar(num_classes: int = 100, in_channels: int = 3) -> CifarResNet:
    return CifarResNet((3, 4, 23, 3), num_classes, in_channels)

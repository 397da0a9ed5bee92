"""DenseNet-BC-121 for 32x32 inputs (Huang et al. 2017): growth rate 32, blocks [6, 12, 24, 16], compression 0.5.

CIFAR form used by PS-KD: a 3x3 stem conv to 2k = 64 channels (no max-pool), bottleneck layers
BN-ReLU-1x1(4k)-BN-ReLU-3x3(k) concatenated onto their input, transitions BN-ReLU-1x1-avgpool/2, a final BN-ReLU,
global average pooling and a linear classifier. 7.05M parameters for 100 classes.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DenseNetCifar", "densenet121_cifar"]


class DenseLayer(nn.Module):
    def __init__(self, cin: int, growth: int):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, 4 * growth, 1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(4 * growth), nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        return torch.cat([out, x], 1)


class Transition(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.bn, self.conv = nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(self.conv(F.relu(self.bn(x))), 2)


class DenseNetCifar(nn.Module):
    def __init__(self, blocks=(6, 12, 24, 16), growth: int = 32, reduction: float = 0.5, num_classes: int = 100,
                 in_channels: int = 3):
        super().__init__()
        c = 2 * growth
        self.conv1 = nn.Conv2d(in_channels, c, 3, padding=1, bias=False)
        layers: list[nn.Module] = []
        for i, n in enumerate(blocks):
            for _ in range(n):
                layers.append(DenseLayer(c, growth))
                c += growth
            if i < len(blocks) - 1:
                out = int(math.floor(c * reduction))
                layers.append(Transition(c, out))
                c = out
        self.features = nn.Sequential(*layers)
        self.bn = nn.BatchNorm2d(c)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn(self.features(self.conv1(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


def densenet121_cifar(num_classes: int = 100, in_channels: int = 3) -> DenseNetCifar:
    return DenseNetCifar((6, 12, 24, 16), 32, 0.5, num_classes, in_channels)

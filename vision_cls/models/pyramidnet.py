"""PyramidNet-200 (alpha 240, bottleneck) for 32x32 inputs (Han et al. 2017), the PS-KD / CutMix CIFAR network.

Channels grow by alpha / (3n) per block (n = (depth - 2) / 9 = 22 bottlenecks per stage) from 16 to 16 + 240;
blocks are BN-1x1-BN-ReLU-3x3-BN-ReLU-1x1(x4)-BN with zero-padded identity shortcuts (2x2 average pooling where
the stage downsamples). 26.84M parameters for 100 classes (CutMix paper: 26.8M).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PyramidNet", "pyramidnet200_a240"]


class PyramidBottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, width: int, stride: int = 1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1, self.bn2 = nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width)
        self.conv2, self.bn3 = nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, width * self.expansion, 1, bias=False)
        self.bn4 = nn.BatchNorm2d(width * self.expansion)
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(out)))
        out = self.conv3(F.relu(self.bn3(out)))
        out = self.bn4(out)
        shortcut = F.avg_pool2d(x, 2, ceil_mode=True) if self.stride != 1 else x
        # Zero-pad the identity to the wider residual: no parameters, which is what keeps PyramidNet's count low.
        return out + F.pad(shortcut, (0, 0, 0, 0, 0, out.shape[1] - shortcut.shape[1]))


class PyramidNet(nn.Module):
    def __init__(self, depth: int = 200, alpha: float = 240, num_classes: int = 100, in_channels: int = 3):
        super().__init__()
        n = (depth - 2) // 9
        add = alpha / (3 * n)
        self.conv1, self.bn1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16)
        dim, cin, blocks = 16.0, 16, []
        for stage in range(3):
            for j in range(n):
                dim += add
                blocks.append(PyramidBottleneck(cin, int(round(dim)), stride=2 if stage > 0 and j == 0 else 1))
                cin = int(round(dim)) * PyramidBottleneck.expansion
        self.layers = nn.Sequential(*blocks)
        self.bn_final = nn.BatchNorm2d(cin)
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(self.bn1(self.conv1(x)))
        out = F.relu(self.bn_final(out))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


def pyramidnet200_a240(num_classes: int = 100, in_channels: int = 3) -> PyramidNet:
    return PyramidNet(200, 240, num_classes, in_channels)

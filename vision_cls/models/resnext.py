"""ResNeXt-29 (8x64d) for 32x32 inputs (Xie et al. 2017): 3 stages of 3 bottlenecks, cardinality 8, base width 64.

Stage outputs 256, 512, 1024 channels (widen factor 4); each bottleneck is 1x1 (D) - grouped 3x3 (D, 8 groups) -
1x1, with D = 8 * 64 * (out / 256); projection shortcuts are 1x1 conv + BN. 34.52M parameters for 100 classes
(34.43M for 10, the paper's "34.4M").
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ResNeXtCifar", "resnext29_8x64d"]


class ResNeXtBottleneck(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, cardinality: int, base_width: int, widen_factor: int):
        super().__init__()
        d = cardinality * int(base_width * cout / (widen_factor * 64))
        self.conv1, self.bn1 = nn.Conv2d(cin, d, 1, bias=False), nn.BatchNorm2d(d)
        self.conv2 = nn.Conv2d(d, d, 3, stride, 1, groups=cardinality, bias=False)
        self.bn2 = nn.BatchNorm2d(d)
        self.conv3, self.bn3 = nn.Conv2d(d, cout, 1, bias=False), nn.BatchNorm2d(cout)
        self.shortcut = None
        if cin != cout or stride != 1:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + (self.shortcut(x) if self.shortcut is not None else x))


class ResNeXtCifar(nn.Module):
    def __init__(self, depth: int = 29, cardinality: int = 8, base_width: int = 64, widen_factor: int = 4,
                 num_classes: int = 100, in_channels: int = 3):
        super().__init__()
        n = (depth - 2) // 9
        widths = [64, 64 * widen_factor, 128 * widen_factor, 256 * widen_factor]
        self.conv1, self.bn1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64)
        stages = []
        for i in range(3):
            blocks = [ResNeXtBottleneck(widths[i] if j == 0 else widths[i + 1], widths[i + 1],
                                        (1 if i == 0 else 2) if j == 0 else 1, cardinality, base_width, widen_factor)
                      for j in range(n)]
            stages.append(nn.Sequential(*blocks))
        self.layers = nn.Sequential(*stages)
        self.fc = nn.Linear(widths[3], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(F.relu(self.bn1(self.conv1(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


def resnext29_8x64d(num_classes: int = 100, in_channels: int = 3) -> ResNeXtCifar:
    return ResNeXtCifar(29, 8, 64, 4, num_classes, in_channels)

"""What the CIFAR ResNet family shares: the 3x3 stem, the post-activation bottleneck, pooling and the classifier.

PreAct ResNet-18, ResNet-101 and ResNeXt-29 differ only in their blocks and stage layout; parameter names
(``conv1``, ``bn1``, ``layers``, ``fc``) and creation order are the same as in each model's own earlier code, so
checkpoints and seeded initialisations are unchanged.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CifarStemNet", "PostActBottleneck", "projection"]


def projection(cin: int, cout: int, stride: int) -> nn.Sequential | None:
    """The 1x1 conv + BN shortcut when a block changes shape, else ``None`` (identity)."""
    if stride == 1 and cin == cout:
        return None
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))


class PostActBottleneck(nn.Module):
    """1x1 - 3x3 (optionally grouped) - 1x1 convs, each followed by BN, ReLU after the residual sum."""

    def __init__(self, cin: int, mid: int, cout: int, stride: int = 1, groups: int = 1):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride, 1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3, self.bn3 = nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout)
        self.shortcut = projection(cin, cout, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + (self.shortcut(x) if self.shortcut is not None else x))


class CifarStemNet(nn.Module):
    """A 3x3 stride-1 stem (64 channels, BN-ReLU, no max-pool), residual stages, global pooling, a linear head.

    Subclasses call ``super().__init__(in_channels)``, build their stages, then :meth:`finish`.
    """

    def __init__(self, in_channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)

    def finish(self, stages: list[nn.Module], features: int, num_classes: int) -> None:
        """Attach the stages and the classifier, then Kaiming-initialise every conv (fan-out, as torchvision)."""
        self.layers = nn.Sequential(*stages)
        self.fc = nn.Linear(features, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(F.relu(self.bn1(self.conv1(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))

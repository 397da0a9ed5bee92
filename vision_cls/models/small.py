"""Small CPU-sized networks for the mini benchmark and the tests."""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["SmallCNN", "small_cnn", "tiny_cnn"]


def _block(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class SmallCNN(nn.Module):
    """conv-BN-ReLU stages with 2x2 max-pooling between them, global average pooling, a linear classifier.

    Args:
        widths: channels per stage (a max-pool follows every stage but the last).
        num_classes: output classes.
        in_channels: input channels.
    """

    def __init__(self, widths=(32, 64, 128), num_classes: int = 10, in_channels: int = 1):
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_channels
        for i, w in enumerate(widths):
            layers += _block(cin, w)
            if i < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
            cin = w
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


def small_cnn(num_classes: int = 10, in_channels: int = 1) -> SmallCNN:
    """Four stages of 16-32-64-128 channels (28 -> 14 -> 7 -> 3 px): 99k parameters and 2.6M multiply-adds per
    28x28 image at 10 classes, enough to over-fit a few thousand Fashion-MNIST images in a CPU minute: the mini
    benchmark's network."""
    return SmallCNN((16, 32, 64, 128), num_classes, in_channels)


def tiny_cnn(num_classes: int = 10, in_channels: int = 1) -> SmallCNN:
    """A few thousand parameters: for tests that must run in seconds."""
    return SmallCNN((8, 16), num_classes, in_channels)

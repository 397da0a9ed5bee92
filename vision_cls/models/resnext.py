"""ResNeXt-29 (8x64d) for 32x32 inputs (Xie et al. 2017): 3 stages of 3 bottlenecks, cardinality 8, base width 64.

Stage outputs 256, 512, 1024 channels (widen factor 4); each bottleneck is 1x1 (D) - grouped 3x3 (D, 8 groups) -
1x1, with D = 8 * 64 * (out / 256); projection shortcuts are 1x1 conv + BN. 34.52M parameters for 100 classes
(34.43M for 10, the paper's "34.4M").
"""
from __future__ import annotations

from torch import nn

from .cifar_resnet_base import CifarStemNet, PostActBottleneck

__all__ = ["ResNeXtCifar", "resnext29_8x64d"]


class ResNeXtBottleneck(PostActBottleneck):
    """1x1 (D) - grouped 3x3 (D, ``cardinality`` groups) - 1x1 (cout), D = cardinality * base_width * cout / 256."""

    def __init__(self, cin: int, cout: int, stride: int, cardinality: int, base_width: int, widen_factor: int):
        d = cardinality * int(base_width * cout / (widen_factor * 64))
        super().__init__(cin, d, cout, stride, groups=cardinality)


class ResNeXtCifar(CifarStemNet):
    def __init__(self, depth: int = 29, cardinality: int = 8, base_width: int = 64, widen_factor: int = 4,
                 num_classes: int = 100, in_channels: int = 3):
        super().__init__(in_channels)
        n = (depth - 2) // 9
        widths = [64, 64 * widen_factor, 128 * widen_factor, 256 * widen_factor]
        stages = []
        for i in range(3):
            blocks = [ResNeXtBottleneck(widths[i] if j == 0 else widths[i + 1], widths[i + 1],
                                        (1 if i == 0 else 2) if j == 0 else 1, cardinality, base_width, widen_factor)
                      for j in range(n)]
            stages.append(nn.Sequential(*blocks))
        self.finish(stages, widths[3], num_classes)


def resnext29_8x64d(num_classes: int = 100, in_channels: int = 3) -> ResNeXtCifar:
    return ResNeXtCifar(29, 8, 64, 4, num_classes, in_channels)

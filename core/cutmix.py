"""CutMix (Yun et al., ICCV 2019) and the target mixing that makes it work with every method.

Mixing is described by a :class:`Mix` (a permutation of the batch and the kept-area fraction ``lam``); every
policy builds per-sample target distributions for the un-mixed samples and then mixes them with
:func:`mix_targets`, so CutMix combines with CE, LS, CS-KD, TF-KD and PS-KD alike.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["Mix", "cutmix", "mix_targets"]


@dataclass
class Mix:
    """A CutMix applied to a batch: image i got a box from image ``perm[i]``; ``lam`` is the area it kept."""

    perm: torch.Tensor
    lam: float


def mix_targets(targets: torch.Tensor, mix: Mix | None) -> torch.Tensor:
    """``lam * t + (1 - lam) * t[perm]`` for per-sample target distributions ``t`` (B, C); identity without mix."""
    if mix is None:
        return targets
    return mix.lam * targets + (1.0 - mix.lam) * targets[mix.perm.to(targets.device)]


def cutmix(images: torch.Tensor, beta: float = 1.0, generator: torch.Generator | None = None
           ) -> tuple[torch.Tensor, Mix]:
    """Paste a random box of a shuffled batch into ``images`` (N, C, H, W), in place on a copy.

    The box area fraction is drawn from Beta(beta, beta); ``lam`` is corrected to the clipped box's real area.
    Randomness comes from ``generator`` (CPU) so runs are reproducible.
    """
    if beta <= 0:
        raise ValueError(f"cutmix beta must be positive, got {beta}")
    n, _, h, w = images.shape
    g = generator if generator is not None else torch.default_generator
    lam = _beta_sample(beta, g)
    perm = torch.randperm(n, generator=g)
    cut = math.sqrt(1.0 - lam)
    ch, cw = int(h * cut), int(w * cut)
    cy = int(torch.randint(h, (1,), generator=g))
    cx = int(torch.randint(w, (1,), generator=g))
    y1, y2 = max(cy - ch // 2, 0), min(cy + ch // 2, h)
    x1, x2 = max(cx - cw // 2, 0), min(cx + cw // 2, w)
    out = images.clone()
    out[:, :, y1:y2, x1:x2] = images[perm.to(images.device), :, y1:y2, x1:x2]
    lam = 1.0 - (y2 - y1) * (x2 - x1) / float(h * w)
    return out, Mix(perm=perm.to(images.device), lam=lam)


def _beta_sample(beta: float, g: torch.Generator) -> float:
    # Beta(a, a) = G1 / (G1 + G2) with Gamma(a) draws. torch's own Beta/Gamma samplers take no generator, so the
    # Gamma draws use Marsaglia-Tsang on ours: that keeps CutMix reproducible from the run's seeded generator.
    def gamma(a: float) -> float:
        boost = 1.0
        if a < 1.0:
            boost = float(torch.rand(1, generator=g)) ** (1.0 / a)
            a += 1.0
        d = a - 1.0 / 3.0
        c = 1.0 / math.sqrt(9.0 * d)
        while True:
            x = float(torch.randn(1, generator=g))
            v = (1.0 + c * x) ** 3
            if v <= 0:
                continue
            u = float(torch.rand(1, generator=g))
            if math.log(max(u, 1e-300)) < 0.5 * x * x + d - d * v + d * math.log(v):
                return d * v * boost
    a, b = gamma(beta), gamma(beta)
    return a / (a + b)

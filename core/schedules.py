"""Alpha schedules: how much of the target comes from the model's own past predictions.

The official PS-KD code uses ``a_t = a_T * (e + 1) / E`` for the 0-based epoch ``e`` of ``E`` epochs, so alpha
reaches ``a_T`` in the last epoch. Because the prediction store starts as one-hot labels, the first epoch is
plain cross-entropy whatever its alpha. Frameworks that count updates instead of epochs (fairseq without
``--max-epoch``, iteration-based mmengine loops) use the per-update form.
"""
from __future__ import annotations

import math

__all__ = ["check_alpha", "linear_alpha", "linear_alpha_per_update", "AlphaSchedule"]


def check_alpha(alpha_T: float, name: str = "alpha_T") -> float:
    """Validate a final alpha value and return it as float.

    Raises:
        ValueError: if it is not a finite number in [0, 1].
    """
    try:
        value = float(alpha_T)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in [0, 1], got {alpha_T!r}") from None
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {alpha_T!r}")
    return value


def linear_alpha(alpha_T: float, epoch: int, num_epochs: int) -> float:
    """Official schedule: ``alpha_T * (epoch + 1) / num_epochs`` for a 0-based ``epoch``.

    Epochs past the end are clamped to ``alpha_T`` (a run extended beyond its planned length keeps the last
    value instead of over-shooting).
    """
    alpha_T = check_alpha(alpha_T)
    if num_epochs <= 0:
        raise ValueError(f"num_epochs must be positive, got {num_epochs}")
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0 (0-based), got {epoch}")
    return alpha_T * min(epoch + 1, num_epochs) / num_epochs


def linear_alpha_per_update(alpha_T: float, update: int, total_updates: int) -> float:
    """Per-update variant of :func:`linear_alpha` for a 0-based update counter.

    With ``total_updates = E * updates_per_epoch`` and ``update`` at the end of epoch ``e`` this equals the
    epoch schedule at that epoch; in between it grows linearly instead of in steps.
    """
    alpha_T = check_alpha(alpha_T)
    if total_updates <= 0:
        raise ValueError(f"total_updates must be positive, got {total_updates}")
    if update < 0:
        raise ValueError(f"update must be >= 0, got {update}")
    return alpha_T * min(update + 1, total_updates) / total_updates


class AlphaSchedule:
    """A linear alpha schedule bound to its length, by epoch or by update.

    Args:
        alpha_T: final alpha, in [0, 1].
        num_epochs: planned number of epochs (epoch mode).
        total_updates: planned number of optimizer updates (update mode); used when ``num_epochs`` is None.
    """

    def __init__(self, alpha_T: float, num_epochs: int | None = None, total_updates: int | None = None):
        self.alpha_T = check_alpha(alpha_T)
        if (num_epochs is None) == (total_updates is None):
            raise ValueError("AlphaSchedule needs exactly one of num_epochs or total_updates")
        self.num_epochs = num_epochs
        self.total_updates = total_updates

    @property
    def by_update(self) -> bool:
        return self.num_epochs is None

    def __call__(self, epoch: int = 0, update: int = 0) -> float:
        """Alpha for a 0-based epoch (epoch mode) or a 0-based update (update mode)."""
        if self.by_update:
            return linear_alpha_per_update(self.alpha_T, update, self.total_updates)
        return linear_alpha(self.alpha_T, epoch, self.num_epochs)

    def __repr__(self) -> str:
        length = f"total_updates={self.total_updates}" if self.by_update else f"num_epochs={self.num_epochs}"
        return f"AlphaSchedule(alpha_T={self.alpha_T}, {length})"

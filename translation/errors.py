"""The one exception type pskd-mt turns into a one-line error message and a non-zero exit."""
from __future__ import annotations

__all__ = ["PSKDError"]


class PSKDError(RuntimeError):
    """A user-facing problem (bad option, missing or mismatched data, unusable checkpoint or store).

    The message is meant to be printed as is, on one line, without a traceback; it should say what is wrong and
    what to do about it.
    """

"""The exception pskd-mt turns into a one-line error message and a non-zero exit: pskd's one error type.

It is :class:`pskd.core.errors.PskdError` (a ``ValueError``); the message says what is wrong and what to do about it.
"""
from pskd.core.errors import PskdError as PSKDError

__all__ = ["PSKDError"]

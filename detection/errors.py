"""The exception the detection plugin raises for bad input: pskd's one error type (the CLI prints it as one line).

It is :class:`pskd.core.errors.PskdError`, a ``ValueError`` taking a single message, which mmengine's registry
needs: it re-raises build errors as ``type(e)(prefixed_message)``.
"""
from pskd.core.errors import PskdError as PSKDError

__all__ = ["PSKDError"]

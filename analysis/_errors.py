"""(in progress) error_correlation."""

from __future__ import annotations

from typing import Any

from ._result import Result

__all__ = ["ErrorCorrelation", "error_correlation"]


class ErrorCorrelation(Result):
    """(in progress)"""


def error_correlation(source: Any, *args: Any, **kwargs: Any) -> ErrorCorrelation:
    """(in progress)"""
    raise NotImplementedError("error_correlation")

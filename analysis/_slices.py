"""(in progress) error_slices."""

from __future__ import annotations

from typing import Any

from ._result import Result

__all__ = ["ErrorSlices", "error_slices"]


class ErrorSlices(Result):
    """(in progress)"""


def error_slices(source: Any, *args: Any, **kwargs: Any) -> ErrorSlices:
    """(in progress)"""
    raise NotImplementedError("error_slices")

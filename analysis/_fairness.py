"""(in progress) fairness_audit."""

from __future__ import annotations

from typing import Any

from ._result import Result

__all__ = ["FairnessResult", "fairness_audit"]


class FairnessResult(Result):
    """(in progress)"""


def fairness_audit(source: Any, *args: Any, **kwargs: Any) -> FairnessResult:
    """(in progress)"""
    raise NotImplementedError("fairness_audit")

"""predlog's version, from the installed distribution's metadata (read once, on first use)."""

from __future__ import annotations

import functools

__all__ = ["version"]


@functools.cache
def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("predlog")
    except PackageNotFoundError:  # a source tree that was never installed
        return "0+unknown"

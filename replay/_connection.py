"""The store's one DuckDB connection, locked to the store's directory.

File access is limited to the store and a private spill directory
(``allowed_directories``), external access is off and the configuration is locked, so SQL
run on it cannot read or write other files. Each thread queries through its own cursor,
reused from query to query (temporary views live on a cursor).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import weakref
from typing import TYPE_CHECKING

from ._errors import QueryNotAllowedError, StoreError
from ._shapes import lit

if TYPE_CHECKING:
    import duckdb

__all__ = ["LockedConnection", "Slot"]


class Slot:
    """A thread's reusable cursor and the views installed on it (view name → SQL)."""

    __slots__ = ("__weakref__", "busy", "cursor", "views")

    def __init__(self, cursor: duckdb.DuckDBPyConnection) -> None:
        self.cursor = cursor
        self.views: dict[str, str] = {}
        self.busy = False


class LockedConnection:
    """An in-memory DuckDB connection that can read ``root`` and nothing else outside it."""

    def __init__(self, root: str, *, threads: int | None = None, memory_limit: str | None = None) -> None:
        import duckdb

        self.root = root
        self.closed = True
        self._lock = threading.Lock()
        self._local = threading.local()
        self._slots: weakref.WeakSet[Slot] = weakref.WeakSet()
        self._tmp = tempfile.mkdtemp(prefix="predlog-duckdb-")
        self._cleanup = weakref.finalize(self, shutil.rmtree, self._tmp, True)
        con = duckdb.connect(":memory:")
        try:
            # GLOBAL: a plain SET would bind only this connection, not the per-query cursors.
            con.execute("SET GLOBAL TimeZone = 'UTC'")
            con.execute("SET GLOBAL parquet_metadata_cache = true")
            con.execute("SET GLOBAL autoinstall_known_extensions = false")
            con.execute("SET GLOBAL autoload_known_extensions = false")
            if threads is not None:
                con.execute(f"SET GLOBAL threads = {int(threads)}")
            if memory_limit is not None:
                con.execute(f"SET GLOBAL memory_limit = {lit(str(memory_limit))}")
            con.execute(f"SET GLOBAL temp_directory = {lit(self._tmp)}")
            # Trailing separators: allowing "/a/store" must not allow "/a/store-other".
            allowed = [os.path.join(root, ""), os.path.join(self._tmp, "")]
            con.execute(f"SET GLOBAL allowed_directories = [{', '.join(lit(p) for p in allowed)}]")
            con.execute("SET GLOBAL enable_external_access = false")
            con.execute("SET GLOBAL lock_configuration = true")
        except BaseException:
            con.close()
            self._cleanup()
            raise
        self._con = con
        self.closed = False

    def _closed_error(self) -> StoreError:
        return StoreError(f"the store {self.root} was closed; open it again with Store(path)")

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A new cursor of the connection (the caller closes it)."""
        with self._lock:
            if self.closed:
                raise self._closed_error()
            return self._con.cursor()

    def take_slot(self) -> Slot | None:
        """This thread's cursor, or None when it is in use (a query run from inside another).

        Give it back with ``slot.busy = False``.
        """
        slot: Slot | None = getattr(self._local, "slot", None)
        if slot is None:
            slot = Slot(self.cursor())
            self._local.slot = slot
            with self._lock:
                self._slots.add(slot)
        elif self.closed:
            raise self._closed_error()
        if slot.busy:
            return None
        slot.busy = True
        return slot

    def check_select(self, query: str) -> None:
        """Accept exactly one SELECT statement (no COPY, ATTACH, SET, PRAGMA, INSTALL, CREATE...).

        Raises duckdb.ParserException for text that does not parse.
        """
        import duckdb

        with self._lock:  # parsing only; the module-level parser would share a connection across threads
            if self.closed:
                raise self._closed_error()
            statements = self._con.extract_statements(query)
        if len(statements) != 1:
            raise QueryNotAllowedError(
                f"Store.sql runs exactly one statement, got {len(statements)}; run them one by one"
            )
        kind = statements[0].type
        if kind != duckdb.StatementType.SELECT:
            raise QueryNotAllowedError(
                f"Store.sql runs SELECT statements only (got {kind.name}): the store is read through views "
                "'predictions' and 'labels'; to change it use Store.compact/retain/forget_user"
            )

    def close(self) -> None:
        """Close every cursor and the connection, remove the spill directory. Idempotent."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            for slot in list(self._slots):
                try:
                    slot.cursor.close()
                except Exception:  # a cursor the thread already closed
                    pass
            self._con.close()
        self._cleanup()

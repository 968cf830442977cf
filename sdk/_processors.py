"""Built-in processors (drop, redact, hash) applied column-wise to Arrow tables in the writer,
and the runner for user processors (plain callables ``row -> row | None``).
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import json
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["HASHED_KEY", "REDACTED", "Pipeline", "Processor", "hash_id"]

Processor = Callable[[dict[str, Any]], "dict[str, Any] | None"]
"""A user processor: takes one prediction row as a dict (the store format's columns) and
returns it, changed or not, or None to drop the row. Runs in the writer thread."""

REDACTED = "[REDACTED]"
HASHED_KEY = b"predlog.hashed"
"""Schema metadata key: the JSON list of the dotted paths that ``hash_fields`` hashed."""


def hash_id(value: Any, key: bytes | str) -> str:
    """The value predlog stores for ``value`` under ``hash_fields`` with ``hash_key=key``.

    HMAC-SHA256 of the value's text, keyed, as 32 hex digits. Use it to look a hashed id up
    (``Store(path, hash_key=...)`` does so for you) or to hash ids the same way elsewhere.
    """
    secret = key.encode() if isinstance(key, str) else bytes(key)
    text = value if isinstance(value, str) else str(value)
    return hmac.new(secret, text.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()[:32]


_REDACT_ROOTS = ("features", "context", "prediction", "extra", "label")


def _map_path(arr: pa.Array, parts: Sequence[str], fn: Callable[[pa.Array], pa.Array | None]) -> pa.Array | None:
    """Apply ``fn`` to the struct child at ``parts`` (dotted path below ``arr``).

    Returns the new array, or None when ``fn`` asks to remove a top-level value.
    """
    import pyarrow as pa

    if not parts:
        return fn(arr)
    t = arr.type
    if not pa.types.is_struct(t) or t.get_field_index(parts[0]) < 0:
        return arr
    idx = t.get_field_index(parts[0])
    new = _map_path(arr.field(idx), parts[1:], fn)
    fields = list(t)
    children = [arr.field(i) for i in range(t.num_fields)]
    if new is None:
        del fields[idx], children[idx]
        if not fields:
            return pa.nulls(len(arr))
    else:
        fields[idx] = pa.field(fields[idx].name, new.type)
        children[idx] = new
    return pa.StructArray.from_arrays(children, fields=fields, mask=arr.is_null() if arr.null_count else None)


def _redact_names(arr: pa.Array, match: Callable[[str], bool]) -> pa.Array:
    """Replace every struct field whose name matches (at any depth) by the marker."""
    import pyarrow as pa
    import pyarrow.compute as pc

    t = arr.type
    if pa.types.is_struct(t):
        changed = False
        fields = list(t)
        children = []
        for i, f in enumerate(fields):
            child = arr.field(i)
            if match(f.name):
                marker = pa.array([REDACTED] * len(child), type=pa.string())
                child = (
                    pc.if_else(child.is_null(), pa.scalar(None, pa.string()), marker) if child.null_count else marker
                )
                changed = True
            else:
                new = _redact_names(child, match)
                changed |= new is not child
                child = new
            fields[i] = pa.field(f.name, child.type)
            children.append(child)
        if not changed:
            return arr
        return pa.StructArray.from_arrays(children, fields=fields, mask=arr.is_null() if arr.null_count else None)
    if (pa.types.is_list(t) or pa.types.is_large_list(t)) and pa.types.is_struct(t.value_type):
        values = _redact_names(arr.flatten(), match)
        if values is arr.flatten():
            return arr
        offsets = pc.subtract(arr.offsets, arr.offsets[0]) if arr.offset else arr.offsets
        return pa.ListArray.from_arrays(offsets, values, mask=arr.is_null() if arr.null_count else None)
    return arr


class Pipeline:
    """drop_fields → redact → hash_fields → user processors, on one table at a time.

    Runs in the writer thread. User processors see plain dict rows and run on prediction
    rows only. A row a processor drops, or raises on, is dropped and counted as
    ``processor``: a failing redaction must not leak what it should hide.
    """

    def __init__(
        self,
        *,
        drop_fields: Sequence[str] = (),
        redact: Sequence[str] = (),
        hash_fields: Sequence[str] = (),
        hash_key: bytes | None = None,
        processors: Sequence[Processor] = (),
    ) -> None:
        self.drop = [p.split(".") for p in drop_fields]
        patterns = [re.compile(fnmatch.translate(p.lower())) for p in redact]
        self.redact: Callable[[str], bool] | None = (
            (lambda name: any(p.match(name.lower()) for p in patterns)) if patterns else None
        )
        self.hash = [p.split(".") for p in hash_fields]
        self.key = hash_key or b""
        self.processors = list(processors)

    @property
    def empty(self) -> bool:
        return not (self.drop or self.redact or self.hash or self.processors)

    def hash_value(self, value: Any) -> str:
        return hash_id(value, self.key)

    def mark(self, table: pa.Table, *, label_table: bool = False) -> pa.Table:
        """Record in the table's schema which paths hold hashes (read back by predlog.replay)."""
        names = table.column_names
        paths = sorted(".".join(p) for p in self.hash if p[0] in names and (not label_table or p[0] == "request_id"))
        if not paths:
            return table
        meta = dict(table.schema.metadata or {})
        meta[HASHED_KEY] = json.dumps(paths).encode()
        return table.replace_schema_metadata(meta)

    def _hash_array(self, arr: pa.Array) -> pa.Array:
        import pyarrow as pa

        return pa.array([None if v is None else self.hash_value(v) for v in arr.to_pylist()], type=pa.string())

    def apply(self, table: pa.Table, *, label_table: bool = False) -> tuple[pa.Table | None, int]:
        """Return the processed table (None if every row was dropped) and rows dropped."""
        table = self.apply_builtin(table, label_table=label_table)
        if self.processors and not label_table:  # user processors are written for prediction rows
            return self._run_user(table)
        return table, 0

    def apply_user(self, table: pa.Table) -> tuple[pa.Table | None, int]:
        """The user processors only (prediction rows), after :meth:`apply_builtin`."""
        if not self.processors:
            return table, 0
        return self._run_user(table)

    def apply_builtin(self, table: pa.Table, *, label_table: bool = False) -> pa.Table:
        """drop_fields, redact and hash_fields: column-wise, never drops a row."""
        import pyarrow as pa

        if not (self.drop or self.redact or self.hash):
            return table
        names = table.column_names

        def replace(name: str, arr: pa.Array | None) -> None:
            nonlocal table
            i = table.schema.get_field_index(name)
            if arr is None:
                arr = pa.nulls(table.num_rows, table.schema.field(i).type)
            table = table.set_column(i, name, arr)

        for parts in self.drop:
            if parts[0] in names:
                col = table.column(parts[0]).combine_chunks()
                replace(parts[0], None if len(parts) == 1 else _map_path(col, parts[1:], lambda a: None))
        if self.redact is not None:
            for root in _REDACT_ROOTS:
                if root in names:
                    col = table.column(root).combine_chunks()
                    new = _redact_names(col, self.redact)
                    if new is not col:
                        replace(root, new)
        for parts in self.hash:
            if parts[0] in names and (not label_table or parts[0] in ("request_id",)):
                col = table.column(parts[0]).combine_chunks()
                replace(parts[0], _map_path(col, parts[1:], self._hash_array))
        return table

    def _run_user(self, table: pa.Table) -> tuple[pa.Table | None, int]:
        import pyarrow as pa

        from ._columns import FLAGS, Flags, column

        rows = table.to_pylist()
        out: list[dict[str, Any]] = []
        for row in rows:
            for proc in self.processors:
                try:
                    row = proc(row)
                except Exception:
                    row = None
                if row is None:
                    break
            if row is not None:
                out.append(row)
        dropped = len(rows) - len(out)
        if not out:
            return None, dropped
        flags = Flags()
        cols = {}
        for name in dict.fromkeys(k for r in out for k in r):
            cols[name] = column([r.get(name) for r in out], name, flags)
        result = pa.table(cols)
        if flags.rows and FLAGS in cols:
            merged = [(r.get(FLAGS) or []) + flags.rows.get(i, []) or None for i, r in enumerate(out)]
            result = result.set_column(
                result.schema.get_field_index(FLAGS), FLAGS, pa.array(merged, type=pa.list_(pa.string()))
            )
        try:
            result = result.cast(pa.unify_schemas([table.schema, result.schema], promote_options="permissive"))
        except Exception:
            pass
        return result, dropped

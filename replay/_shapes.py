"""Shapes: what DuckDB can unify across Parquet files whose schemas differ.

A shape is a hashable summary of an Arrow type saying what DuckDB can unify:
  ("null",) | ("scalar", family) | ("list", shape) | ("map", shape, shape)
  | ("struct", ((name, shape), ...)) | ("json",)
Scalars of one family unify; a string unifies with numbers and times (to a string). Other
pairs (scalar vs list/struct, list vs struct, numbers vs times, ...) do not: such a value is
read as JSON text ("json") when files that disagree are queried together.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "JSON",
    "NULL",
    "TEXT",
    "Shape",
    "column_paths",
    "convert_sql",
    "fields_of",
    "has_json",
    "lit",
    "ident",
    "merge",
    "schema_shape",
    "shape_of",
]


def lit(text: str) -> str:
    """A SQL string literal (quotes doubled; DuckDB strings have no backslash escapes)."""
    return "'" + text.replace("'", "''") + "'"


def ident(name: str) -> str:
    """A quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


Shape = tuple[Any, ...]
NULL: Shape = ("null",)
JSON: Shape = ("json",)
_TO_STR = frozenset({"num", "str", "text", "time", "dur"})
TEXT: Shape = ("scalar", "text")
"""A string column that some files hold as numbers or times (a number matches it as text)."""


def shape_of(t: pa.DataType) -> Shape:
    import pyarrow as pa

    types = pa.types
    if types.is_dictionary(t):
        return shape_of(t.value_type)
    if types.is_null(t):
        return NULL
    if types.is_boolean(t) or types.is_integer(t) or types.is_floating(t) or types.is_decimal(t):
        return ("scalar", "num")
    if types.is_string(t) or types.is_large_string(t) or getattr(types, "is_string_view", lambda _: False)(t):
        return ("scalar", "str")
    if types.is_binary(t) or types.is_large_binary(t) or types.is_fixed_size_binary(t):
        return ("scalar", "bin")
    if types.is_timestamp(t) or types.is_date(t):
        return ("scalar", "time")
    if types.is_time(t):
        return ("scalar", "clock")
    if types.is_duration(t):
        return ("scalar", "dur")
    if types.is_map(t):
        return ("map", shape_of(t.key_type), shape_of(t.item_type))
    if types.is_list(t) or types.is_large_list(t) or types.is_fixed_size_list(t):
        return ("list", shape_of(t.value_type))
    if types.is_struct(t):
        return ("struct", tuple((t.field(i).name, shape_of(t.field(i).type)) for i in range(t.num_fields)))
    return ("scalar", f"other:{t}")


def schema_shape(schema: pa.Schema) -> Shape:
    return ("struct", tuple((f.name, shape_of(f.type)) for f in schema))


def has_json(s: Shape) -> bool:
    kind = s[0]
    if kind == "json":
        return True
    if kind == "list":
        return has_json(s[1])
    if kind == "map":
        return has_json(s[1]) or has_json(s[2])
    if kind == "struct":
        return any(has_json(sub) for _, sub in s[1])
    return False


def merge(a: Shape, b: Shape) -> Shape:
    """The shape DuckDB reads ``a`` and ``b`` as together; ``JSON`` where they disagree."""
    if a == b:
        return a
    if a[0] == "null":
        return b
    if b[0] == "null":
        return a
    if a[0] == "json" or b[0] == "json":
        return JSON
    if a[0] == "scalar" and b[0] == "scalar":
        fa, fb = a[1], b[1]
        if ({fa, fb} & {"str", "text"}) and fa in _TO_STR and fb in _TO_STR:
            # Text that other files hold as numbers or times: DuckDB reads it all as text.
            return TEXT
        return JSON
    if a[0] != b[0]:
        return JSON
    if a[0] == "list":
        child = merge(a[1], b[1])
        return JSON if has_json(child) else ("list", child)
    if a[0] == "map":
        key, item = merge(a[1], b[1]), merge(a[2], b[2])
        return JSON if has_json(key) or has_json(item) else ("map", key, item)
    fields = dict(a[1])
    for name, sub in b[1]:
        fields[name] = merge(fields[name], sub) if name in fields else sub
    return ("struct", tuple(fields.items()))


def convert_sql(ref: str, src: Shape, target: Shape) -> str:
    """SQL turning ``ref`` (of shape ``src``) into ``target``: JSON text where target says so."""
    if target[0] == "json":
        return f"CAST(to_json({ref}) AS VARCHAR)"
    if target[0] == "struct" and src[0] == "struct":
        fields = dict(target[1])
        parts = []
        changed = False
        for name, sub in src[1]:
            inner = f"struct_extract({ref}, {lit(name)})"
            expr = convert_sql(inner, sub, fields.get(name, sub))
            changed = changed or expr != inner
            parts.append(f"{lit(name)}: {expr}")
        if changed:
            return f"CASE WHEN {ref} IS NULL THEN NULL ELSE {{{', '.join(parts)}}} END"
    return ref


def fields_of(s: Shape) -> dict[str, Shape]:
    return dict(s[1]) if s[0] == "struct" else {}


def column_paths(s: Shape, prefix: str = "", depth: int = 0) -> list[str]:
    """Every addressable column: top-level names and dotted struct fields."""
    out = []
    for name, sub in fields_of(s).items():
        path = f"{prefix}{name}"
        out.append(path)
        if sub[0] == "struct" and depth < 3:
            out.extend(column_paths(sub, path + ".", depth + 1))
    return out

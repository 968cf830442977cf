"""Arrow results as pandas DataFrames, with one rule for every reading method.

============================  =========================  ================
Arrow / DuckDB type           pandas dtype               missing value
============================  =========================  ================
string                        object (str)               None
integer, no nulls             int64 (int32 ...)          (none)
integer with nulls            Int64 (Int32 ...)          pd.NA
boolean                       bool, or boolean w/ nulls  pd.NA
floating                      float64                    NaN
timestamp (UTC)               datetime64[us, UTC]        NaT
date (``date``)               object (datetime.date)     None
struct, list, map             object (dict, list)        None
============================  =========================  ================

Integers stay integers and strings stay strings whether or not a column has missing
values; only the kind of missing value follows the column's type.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

__all__ = ["decode_labels", "to_frame"]


def to_frame(table: pa.Table) -> pd.DataFrame:
    """``table`` as a DataFrame, column by column as the module doc says."""
    import pandas as pd

    return pd.DataFrame({name: _series(col) for name, col in zip(table.column_names, table.columns)}, copy=False)


def _nullable(t: pa.DataType) -> Any:
    import pandas as pd
    import pyarrow as pa

    table = {
        pa.int8(): pd.Int8Dtype(),
        pa.int16(): pd.Int16Dtype(),
        pa.int32(): pd.Int32Dtype(),
        pa.int64(): pd.Int64Dtype(),
        pa.uint8(): pd.UInt8Dtype(),
        pa.uint16(): pd.UInt16Dtype(),
        pa.uint32(): pd.UInt32Dtype(),
        pa.uint64(): pd.UInt64Dtype(),
        pa.bool_(): pd.BooleanDtype(),
    }
    return table.get(t)


def _series(col: pa.ChunkedArray) -> pd.Series:
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    t = col.type
    if pa.types.is_dictionary(t):
        col = col.cast(t.value_type)
        t = col.type
    if pa.types.is_string(t) or pa.types.is_large_string(t) or getattr(pa.types, "is_string_view", lambda _: False)(t):
        return pd.Series(np.asarray(col.to_numpy(zero_copy_only=False), dtype=object), dtype=object, copy=False)
    if pa.types.is_integer(t) or pa.types.is_boolean(t):
        if col.null_count:
            return col.to_pandas(types_mapper=_nullable)
        return col.to_pandas()
    if pa.types.is_date(t):
        return col.to_pandas(date_as_object=True)
    if (
        pa.types.is_struct(t)
        or pa.types.is_list(t)
        or pa.types.is_large_list(t)
        or pa.types.is_fixed_size_list(t)
        or pa.types.is_map(t)
        or pa.types.is_null(t)
    ):
        out = np.empty(len(col), dtype=object)
        out[:] = col.to_pylist()
        return pd.Series(out, dtype=object, copy=False)
    return col.to_pandas()


def decode_labels(df: pd.DataFrame, column: str = "label", type_column: str = "label_type") -> pd.DataFrame:
    """Labels read as JSON text (their types differ in the selection) back into values.

    Each label gets the type it was logged with: ints, floats, strings, booleans, lists and
    dicts as JSON has them, datetimes and dates parsed back from their text.
    """
    import pandas as pd

    if column not in df.columns or type_column not in df.columns:
        return df
    values = []
    for text, family in zip(df[column].tolist(), df[type_column].tolist()):
        values.append(_decode(text, family))
    out = df.copy()
    out[column] = pd.Series(values, index=df.index, dtype=object)
    return out


def _decode(text: Any, family: Any) -> Any:
    if text is None or (isinstance(text, float) and text != text):
        return None
    value = json.loads(text)
    if value is None:
        return None
    if family == "datetime":
        parsed = dt.datetime.fromisoformat(str(value).replace(" ", "T"))
        return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=dt.UTC)
    if family == "date":
        return dt.date.fromisoformat(str(value))
    if family == "float" and isinstance(value, int):
        return float(value)
    return value

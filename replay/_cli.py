"""The ``predlog`` command line: query, inspect and maintain a replay store.

::

    predlog [--store PATH] query "select model_version, count(*) from predictions group by 1"
    predlog user u-123 --model fraud --start 2026-03-01 --format json
    predlog get 0195b7a4-...                     # one prediction, one line per column
    predlog stats
    predlog compact [--model M] [--before DATE]
    predlog retain --days 30 [--dry-run]
    predlog forget u-123 [--yes]                 # asks first, unless --yes
    predlog replay --module mypkg.model:predict --model fraud --record-as 2.0

The store is ``--store``, else ``$PREDLOG_STORE``, else ``./predlog-store``. Results go to
stdout as a table (``--format table``, the default), ``csv``, ``json`` (an array of records,
ISO 8601 timestamps) or ``parquet`` (needs ``--output FILE``). Progress lines and messages go
to stderr, so stdout can be piped. An error is one line ``predlog: error: ...`` on stderr and
exit code 1 (2 for a usage error, as argparse does); ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import datetime as dt
import decimal
import importlib
import importlib.util
import inspect
import json
import math
import os
import re
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from ._store import Store

__all__ = ["main"]

PROG = "predlog"
STORE_ENV = "PREDLOG_STORE"
DEFAULT_STORE = "predlog-store"
#: Rows a table shows when ``--limit`` is not given (csv, json and parquet write every row).
TABLE_ROWS = 100
#: Widest cell of a table before it is cut with "…".
CELL_WIDTH = 40
FORMATS = ("table", "csv", "json", "parquet")

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class UsageError(Exception):
    """A command line that cannot be run as given (exit code 2)."""


class CommandError(Exception):
    """A command that could not do its work (exit code 1); the message is the whole story."""


# ---------------------------------------------------------------------------- values


def _is_null(v: Any) -> bool:
    if v is None:
        return True
    if isinstance(v, float):
        return math.isnan(v)
    name = type(v).__name__
    if name in ("NAType", "NaTType"):
        return True
    if type(v).__module__ == "numpy" and getattr(v, "shape", None) == ():
        try:
            return bool(v != v)  # NaN / NaT
        except (TypeError, ValueError):
            return False
    return False


def _iso(v: Any) -> str:
    """ISO 8601 text of a datetime-like value (UTC ones keep their ``+00:00``)."""
    if isinstance(v, (dt.datetime, dt.date, dt.time)):  # pandas Timestamps are datetimes
        return v.isoformat()
    return str(v)


def _values(col: pd.Series) -> list[Any]:
    """A column's values as Python objects. A DuckDB ``DATE`` reaches pandas as midnight
    datetimes: a column of naive datetimes that are all at midnight is given as dates."""
    import pandas as pd

    if pd.api.types.is_datetime64_dtype(col.dtype) and not isinstance(col.dtype, pd.DatetimeTZDtype):
        present = col.dropna()
        if len(present) and bool((present == present.dt.normalize()).all()):
            return [None if _is_null(v) else v.date() for v in col.tolist()]
    values: list[Any] = col.tolist()
    return values


def _plain(v: Any) -> Any:
    """A JSON-ready Python value: ISO timestamps, lists for arrays, None for nulls."""
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if type(v).__module__ == "numpy":
        if getattr(v, "ndim", 0):
            return [_plain(x) for x in v.tolist()]
        if "datetime64" in str(getattr(v, "dtype", "")) or "timedelta64" in str(getattr(v, "dtype", "")):
            import pandas as pd

            return None if _is_null(v) else _plain(pd.Timestamp(v) if "datetime" in str(v.dtype) else pd.Timedelta(v))
        v = v.item()
    if _is_null(v):
        return None
    if isinstance(v, bool) or isinstance(v, (int, str)):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else ("inf" if v > 0 else "-inf")
    if isinstance(v, (dt.datetime, dt.date, dt.time)):
        return _iso(v)
    if isinstance(v, dt.timedelta):
        return v.total_seconds()
    if isinstance(v, decimal.Decimal):
        return float(v)
    if isinstance(v, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(v)).decode("ascii")
    if isinstance(v, uuid.UUID):
        return str(v)
    if hasattr(v, "tolist"):  # pandas / Arrow arrays
        return _plain(v.tolist())
    return str(v)


def _json_text(v: Any) -> str:
    return json.dumps(_plain(v), ensure_ascii=False, separators=(",", ":"))


def _is_nested(v: Any) -> bool:
    return isinstance(v, (dict, list, tuple)) or (type(v).__module__ == "numpy" and getattr(v, "ndim", 0) > 0)


def _cell_text(v: Any) -> str:
    """One table cell: readable, on one line."""
    if _is_nested(v):
        text = _json_text(v)
    else:
        p = _plain(v)
        if p is None:
            return "NULL"
        if isinstance(p, float):
            text = f"{p:.6g}"
        elif isinstance(v, (dt.datetime,)) or type(v).__name__ == "Timestamp":
            text = p.replace("T", " ").replace("+00:00", "Z")
        else:
            text = str(p)
    return text.replace("\r", "\\r").replace("\n", "\\n").replace("\t", "\\t")


def _cut(text: str, width: int | None) -> str:
    if width is None or width <= 0 or len(text) <= width:
        return text
    return text[: max(width - 1, 1)] + "…"


# ---------------------------------------------------------------------------- formats


def _render_table(df: pd.DataFrame, *, limit: int | None, width: int | None) -> str:
    """A fixed-width table of ``df``: numbers right-aligned, wide cells cut, a row count last."""
    import pandas as pd

    total = len(df)
    shown = df if limit is None or limit <= 0 else df.head(limit)
    cols = [str(c) for c in shown.columns]
    numeric = [
        pd.api.types.is_numeric_dtype(shown[c].dtype) and not pd.api.types.is_bool_dtype(shown[c].dtype)
        for c in shown.columns
    ]
    cells = [[_cut(_cell_text(v), width) for v in _values(shown.iloc[:, i])] for i in range(len(cols))]
    widths = [max([len(h)] + [len(c) for c in col]) for h, col in zip(cols, cells)]

    def line(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)]
        return "  ".join(parts).rstrip()

    out = [line(cols), "  ".join("-" * w for w in widths)] if cols else []
    for r in range(len(shown)):
        out.append(line([col[r] for col in cells]))
    if len(shown) < total:
        out.append(f"({len(shown):,} of {total:,} rows shown; --limit 0 shows all)")
    else:
        out.append(f"({total:,} row{'' if total == 1 else 's'})")
    return "\n".join(out) + "\n"


def _render_fields(items: Mapping[str, Any], *, width: int | None) -> str:
    """``name  value`` lines (one record, or a result object)."""
    if not items:
        return ""
    w = max(len(str(k)) for k in items)
    return "".join(f"{str(k).ljust(w)}  {_cut(_cell_text(v), width)}\n" for k, v in items.items())


def _csv_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Columns CSV can hold: ISO timestamps, JSON text for lists and structs, base64 for bytes."""
    import pandas as pd

    out = {}
    for name in df.columns:
        col = df[name]
        plain_column = (
            pd.api.types.is_numeric_dtype(col.dtype)
            or pd.api.types.is_bool_dtype(col.dtype)
            or pd.api.types.is_string_dtype(col.dtype)
            and col.dtype != object
        )
        if (
            isinstance(col.dtype, pd.DatetimeTZDtype)
            or pd.api.types.is_datetime64_any_dtype(col.dtype)
            or (
                not plain_column
                and any(
                    isinstance(v, (dt.date, dt.time, bytes, dict, list, tuple)) or _is_nested(v) for v in col.tolist()
                )
            )
        ):
            # Vectors and structs as JSON in every command (not a numpy or pandas repr).
            out[name] = [
                None if _is_null(v) and not _is_nested(v) else (_json_text(v) if _is_nested(v) else _plain(v))
                for v in _values(col)
            ]
        else:
            out[name] = col
    return pd.DataFrame(out, columns=list(df.columns))


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    names = [str(c) for c in df.columns]
    columns = [[_plain(v) for v in _values(df.iloc[:, i])] for i in range(len(names))]
    return [dict(zip(names, row)) for row in zip(*columns)] if names else [{} for _ in range(len(df))]


def _arrow_table(df: pd.DataFrame) -> Any:
    """``df`` as an Arrow table; a column Arrow cannot type (mixed values) goes as JSON text."""
    import pyarrow as pa

    arrays, names = [], []
    for i, name in enumerate(df.columns):
        col = df.iloc[:, i]
        try:
            arr = pa.Array.from_pandas(col)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, TypeError, ValueError):
            arr = pa.array(
                [
                    None if _is_null(v) and not _is_nested(v) else (v if isinstance(v, str) else _json_text(v))
                    for v in col.tolist()
                ],
                type=pa.string(),
            )
        arrays.append(arr)
        names.append(str(name))
    return pa.Table.from_arrays(arrays, names=names)


@dataclasses.dataclass
class Output:
    """Where and how a command writes its result."""

    format: str = "table"
    path: str | None = None
    limit: int | None = None
    width: int | None = CELL_WIDTH

    @contextlib.contextmanager
    def _text(self) -> Iterator[IO[str]]:
        if self.path is None or self.path == "-":
            yield sys.stdout
            sys.stdout.flush()
        else:
            with open(self.path, "w", encoding="utf-8", newline="") as f:
                yield f

    def frame(self, df: pd.DataFrame) -> None:
        """A result with rows."""
        if self.format != "table" and self.limit is not None and self.limit > 0:
            df = df.head(self.limit)
        if self.format == "parquet":
            import pyarrow.parquet as pq

            assert self.path is not None
            pq.write_table(_arrow_table(df), self.path, compression="zstd")
            return
        with self._text() as f:
            if self.format == "table":
                limit = TABLE_ROWS if self.limit is None else self.limit
                f.write(_render_table(df, limit=limit, width=self.width))
            elif self.format == "csv":
                _csv_frame(df).to_csv(f, index=False, lineterminator="\n")
            else:
                rows = _records(df)
                f.write("[" + ",\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "]\n")

    def record(self, fields: Mapping[str, Any], *, table: str | None = None, width: int | None = None) -> None:
        """A result that is one record (a prediction, a maintenance result, store statistics)."""
        if self.format in ("csv", "parquet"):
            import pandas as pd

            flat = {k: (_json_text(v) if _is_nested(v) else v) for k, v in fields.items()}
            self.frame(pd.DataFrame([flat], columns=list(flat)))
            return
        with self._text() as f:
            if self.format == "json":
                f.write(json.dumps(_plain(dict(fields)), ensure_ascii=False, indent=2) + "\n")
            else:
                f.write(table if table is not None else _render_fields(fields, width=width))


# ---------------------------------------------------------------------------- progress


class Progress:
    """Short progress lines on stderr: a start line, a ticking elapsed time, a done line.

    On a terminal the elapsed time ticks on the start line; elsewhere (logs, CI) a line is
    added every ``every_s`` seconds so a long run shows it is alive. Nothing goes to stdout.
    """

    def __init__(self, enabled: bool, every_s: float = 30.0) -> None:
        self.enabled = enabled
        self.every_s = every_s
        self.tty = enabled and sys.stderr.isatty()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._line = ""

    def say(self, text: str) -> None:
        if self.enabled:
            with self._lock:
                self._clear()
                print(text, file=sys.stderr, flush=True)

    def _clear(self) -> None:
        if self.tty and self._line:
            sys.stderr.write("\r" + " " * len(self._line) + "\r")
            self._line = ""

    @contextlib.contextmanager
    def task(self, text: str, *, quiet: bool = False) -> Iterator[Callable[[], float]]:
        """Announce ``text``, keep showing the elapsed time until the block ends.

        ``quiet``: no start line, and nothing at all unless stderr is a terminal and the
        block takes more than a second (a query: its output is the result itself).
        """
        t0 = time.monotonic()

        def elapsed() -> float:
            return time.monotonic() - t0

        if not self.enabled or (quiet and not self.tty):
            yield elapsed
            return
        if not quiet:
            self.say(text)
        self._stop.clear()

        def tick() -> None:
            interval = 0.5 if self.tty else self.every_s
            while not self._stop.wait(interval):
                if quiet and elapsed() < 1.0:
                    continue
                with self._lock:
                    if self.tty:
                        self._clear()
                        self._line = f"{text} {elapsed():.0f} s" if quiet else f"  … {elapsed():.0f} s"
                        sys.stderr.write(self._line)
                    else:
                        print(f"  … still working ({elapsed():.0f} s)", file=sys.stderr)
                    sys.stderr.flush()

        self._thread = threading.Thread(target=tick, name="predlog-cli-progress", daemon=True)
        self._thread.start()
        try:
            yield elapsed
        finally:
            self._stop.set()
            self._thread.join()
            with self._lock:
                self._clear()
                sys.stderr.flush()


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"  # pragma: no cover


def _n(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


# ---------------------------------------------------------------------------- commands


def _open(args: argparse.Namespace) -> Store:
    from ._store import Store

    return Store(args.store)


def _read_sql(text: str) -> str:
    sql = sys.stdin.read() if text == "-" else text
    if not sql.strip():
        raise UsageError("no SQL given: pass a query, or '-' to read it from stdin")
    return sql


def cmd_query(args: argparse.Namespace, out: Output, progress: Progress) -> int:
    """Run one SQL SELECT over the store.

    Run one SELECT over the views 'predictions' and 'labels' (struct fields read as
    features.age, context.country).
    """
    sql = _read_sql(args.sql)
    with _open(args) as s, progress.task("running the query…", quiet=True):
        df = s.sql(
            sql, model=args.model, start=args.start, end=args.end, last=args.last, include_live=args.include_live
        )
    out.frame(df)
    return EXIT_OK


def cmd_user(args: argparse.Namespace, out: Output, progress: Progress) -> int:
    """Every prediction made for one user.

    Every prediction made for one user, oldest first.
    """
    with _open(args) as s, progress.task("reading…", quiet=True):
        df = s.user(
            args.user_id,
            model=args.model,
            start=args.start,
            end=args.end,
            last=args.last,
            include_live=args.include_live,
        )
    out.frame(df)
    return EXIT_OK


def cmd_get(args: argparse.Namespace, out: Output, progress: Progress) -> int:
    """One prediction by its id.

    One prediction by its id (one line per column in a table).
    """
    with _open(args) as s, progress.task("reading…", quiet=True):
        row = s.get(args.prediction_id, include_live=args.include_live)
    fields = {str(k): v for k, v in row.items()}
    out.record(fields, width=out.width if args.max_width_given else None)
    return EXIT_OK


def _stats_table(st: Mapping[str, Any], width: int | None) -> str:

    labels = st.get("labels") or {}
    head = {
        "store": st.get("root"),
        "predictions": f"{st.get('rows', 0):,} rows in {_n(st.get('files', 0), 'file')} ({_size(st.get('bytes', 0))})",
        "first_ts": st.get("first_ts"),
        "last_ts": st.get("last_ts"),
        "labels": f"{labels.get('rows', 0):,} rows in {_n(labels.get('files', 0), 'file')} ({_size(labels.get('bytes', 0))})",
        "live segments": f"{st.get('live_segments', 0)} ({_size(st.get('live_bytes', 0))})",
        "maintenance in progress": st.get("maintenance_in_progress", 0),
        "read only": st.get("read_only", False),
    }
    text = _render_fields(head, width=None)
    models = _models_frame(st)
    if len(models):
        text += "\n" + _render_table(models, limit=None, width=width)
    return text


def _models_frame(st: Mapping[str, Any]) -> pd.DataFrame:
    import pandas as pd

    rows = []
    for name, m in sorted((st.get("models") or {}).items()):
        for version, n in sorted((m.get("versions") or {"": 0}).items(), key=lambda kv: str(kv[0])):
            rows.append(
                {
                    "model": name,
                    "version": version,
                    "rows": n,
                    "model_rows": m.get("rows"),
                    "files": m.get("files"),
                    "bytes": m.get("bytes"),
                    "first_ts": m.get("first_ts"),
                    "last_ts": m.get("last_ts"),
                }
            )
    cols = ["model", "version", "rows", "model_rows", "files", "bytes", "first_ts", "last_ts"]
    return pd.DataFrame(rows, columns=cols)


def cmd_stats(args: argparse.Namespace, out: Output, progress: Progress) -> int:
    """What the store holds.

    Rows, files, bytes, models, versions and time range of the store. csv and parquet give one
    row per model and version.
    """
    with _open(args) as s, progress.task("reading…", quiet=True):
        st = s.stats()
    if out.format in ("csv", "parquet"):
        out.frame(_models_frame(st))
    else:
        out.record(st, table=_stats_table(st, out.width))
    return EXIT_OK


def _partition_count(root: str, model: str | None, before: str | None) -> int:
    """Partition directories a maintenance run looks at (the store layout, listed)."""
    from predlog._layout import DATE_KEY, LABELS, MODEL_KEY, PREDICTIONS, in_range, list_partition_values

    end = dt.date.fromisoformat(before) - dt.timedelta(days=1) if before else None
    pred = os.path.join(root, PREDICTIONS)
    models = list_partition_values(pred, MODEL_KEY) if model is None else [model]
    n = sum(
        len(in_range(list_partition_values(os.path.join(pred, f"{MODEL_KEY}={m}"), DATE_KEY), None, end))
        for m in models
    )
    if model is None:
        n += len(in_range(list_partition_values(os.path.join(root, LABELS), DATE_KEY), None, end))
    return n


def _date_arg(value: str | None, name: str) -> str | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value).isoformat()
    except ValueError:
        raise UsageError(f"{name} {value!r} is not a date: write it as YYYY-MM-DD") from None


def cmd_compact(args: argparse.Namespace, out: Output, progress: Progress) -> int:
    """Merge small files into large sorted ones.

    Merge the small files of each partition into large files sorted by user and time. Safe while
    writers and readers run.
    """
    before = _date_arg(args.before, "--before")
    with _open(args) as s:
        if args.model is not None:
            s.files(model=args.model)  # UnknownModelError, with the models present
        parts = _partition_count(s.root, args.model, before)
        kw: dict[str, Any] = {"model": args.model, "before": before, "min_files": args.min_files}
        if args.target_rows is not None:
            kw["target_rows"] = args.target_rows
        with progress.task(f"compacting {s.root}: {_n(parts, 'partition')} to look at…") as elapsed:
            res = s.compact(**kw)
        progress.say(
            f"compacted {_n(len(res.partitions), 'partition')}: {res.files_before:,} → {_n(res.files_after, 'file')}, "
            f"{res.rows:,} rows, {_size(res.bytes_before)} → {_size(res.bytes_after)} in {elapsed():.1f} s"
            + (f"; {_n(res.skipped_files, 'file')} left alone (still being sealed)" if res.skipped_files else "")
        )
    out.record(res.to_dict(), width=None)
    return EXIT_OK


def cmd_retain(args: argparse.Namespace, out: Output, progress: Progress) -> int:
    """Delete partitions older than N days.

    Delete the date partitions (predictions and labels) older than N days before today (UTC).
    Today is never deleted.
    """
    if args.days < 0:
        raise UsageError(f"--days must be 0 or more, got {args.days}")
    with _open(args) as s:
        cutoff = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=args.days)
        verb = "looking for" if args.dry_run else "dropping"
        with progress.task(
            f"{verb} partitions dated before {cutoff} (keeping {_n(args.days, 'day')} before today)…"
        ) as elapsed:
            res = s.retain(args.days, dry_run=args.dry_run)
        what = "would drop" if args.dry_run else "dropped"
        progress.say(
            f"{what} {_n(len(res.dates), 'date')}: {_n(res.files, 'file')} ({_size(res.bytes)}), "
            f"{_n(res.prediction_rows, 'prediction')}, {_n(res.label_rows, 'label')} in {elapsed():.1f} s"
        )
    out.record(res.to_dict(), width=None)
    return EXIT_OK


def _confirm(question: str) -> bool | None:
    """Ask on the terminal; None when there is no terminal to ask on."""
    if not sys.stdin.isatty():
        return None
    sys.stderr.write(f"{question} [y/N] ")
    sys.stderr.flush()
    answer = sys.stdin.readline()
    return answer.strip().lower() in ("y", "yes")


def cmd_forget(args: argparse.Namespace, out: Output, progress: Progress) -> int:
    """Erase every row of one user.

    Erase every prediction of one user and the labels joined to them. Asks for confirmation on a
    terminal; elsewhere needs --yes.
    """
    from ._forget import UserNotFoundWarning, not_found_message

    hash_key = None
    if args.hashed:
        key = os.environ.get("PREDLOG_HASH_KEY")
        if not key:
            raise UsageError("--hashed needs the store's hash key in PREDLOG_HASH_KEY")
        hash_key = key.encode()
    with _open(args) as s:
        if not args.yes:
            stored = args.user_id
            if hash_key is not None:
                from ._forget import hash_user_id

                stored = hash_user_id(args.user_id, hash_key)
            count = s.sql("SELECT count(*) AS n FROM predictions WHERE user_id = ?", [stored])["n"].iloc[0]
            ok = _confirm(
                f"Erase every row of user {args.user_id!r} ({_n(int(count), 'prediction')}, and their "
                f"labels) from {s.root}? This cannot be undone."
            )
            if ok is None:
                raise UsageError("refusing to erase without confirmation: stdin is not a terminal; pass --yes")
            if not ok:
                print(f"{PROG}: nothing erased", file=sys.stderr)
                return EXIT_ERROR
        with progress.task(f"erasing the rows of user {args.user_id!r} from {s.root}…") as elapsed:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserNotFoundWarning)  # said below, as an error
                res = s.forget_user(args.user_id, hash_key=hash_key, wait_live_s=args.wait_live_s)
        if not res.found:
            raise CommandError(not_found_message(s.root, args.user_id, hashed=hash_key is not None))
        progress.say(
            f"erased {_n(res.prediction_rows, 'prediction')} and {_n(res.label_rows, 'label')} "
            f"({res.files_rewritten:,} files rewritten, {res.files_deleted:,} deleted) in {elapsed():.1f} s"
        )
    out.record(res.to_dict(), width=None)
    if not res.complete:
        raise CommandError(
            f"erasure incomplete: {_n(len(res.pending_live), 'live segment')} of running writers still hold rows "
            f"of the user after waiting {res.waited_s:.0f} s; run 'predlog forget' again once they are sealed"
        )
    return EXIT_OK


def load_function(spec: str) -> Callable[..., Any]:
    """``pkg.mod:fn`` (or ``path/to/file.py:fn``; ``fn`` may be dotted) → the callable.

    The current directory is importable, as with ``python -m``.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise UsageError(f"--module {spec!r}: write it as 'package.module:function' (or 'file.py:function')")
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        if module_name.endswith(".py") or os.sep in module_name:
            path = os.path.abspath(module_name)
            if not os.path.isfile(path):
                raise CommandError(f"--module {spec!r}: no such file {path!r}")
            name = os.path.splitext(os.path.basename(path))[0]
            mspec = importlib.util.spec_from_file_location(name, path)
            if mspec is None or mspec.loader is None:
                raise CommandError(f"--module {spec!r}: cannot import {path!r}")
            module = importlib.util.module_from_spec(mspec)
            sys.modules[name] = module
            mspec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except CommandError:
        raise
    except ModuleNotFoundError as exc:
        raise CommandError(f"--module {spec!r}: {exc} (looked in the current directory {cwd} and sys.path)") from exc
    except Exception as exc:
        raise CommandError(f"--module {spec!r}: importing {module_name!r} raised {type(exc).__name__}: {exc}") from exc
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise CommandError(f"--module {spec!r}: {module_name!r} has no attribute {attr!r}") from None
    if not callable(obj):
        raise CommandError(f"--module {spec!r}: {attr!r} is a {type(obj).__name__}, not a function")
    return obj  # type: ignore[no-any-return]


def cmd_replay(args: argparse.Namespace, out: Output, progress: Progress) -> int:
    """Run recorded inputs through a function.

    Run the recorded inputs (features) of a model through another function and compare with the
    recorded predictions. A table shows the summary and the breakdown by model version; json
    adds the accuracy and the breakdown by context; csv and parquet write one row per replayed
    prediction (logged, replayed, changed...).
    """
    fn = load_function(args.module)
    kw = {
        k: v
        for k, v in (
            ("model", args.model),
            ("version", args.version),
            ("start", args.start),
            ("end", args.end),
            ("last", args.last),
            ("record_as", args.record_as),
        )
        if v is not None
    }
    with _open(args) as s:
        with progress.task(f"replaying the recorded inputs through {args.module}…") as elapsed:
            result = s.replay(fn, **kw)
        summary = dict(getattr(result, "summary", None) or {})
        if summary:
            rate = summary.get("agreement_rate")
            agreement = "" if rate is None or _is_null(rate) else f", agreement {100 * rate:.2f}%"
            recorded = summary.get("recorded")
            progress.say(
                f"replayed {_n(int(summary.get('rows', 0)), 'row')} of {summary.get('model')} in {elapsed():.1f} s: "
                f"{int(summary.get('compared', 0)):,} compared, {int(summary.get('changed', 0)):,} changed{agreement}"
                + (f", {_n(int(summary.get('errors') or 0), 'error')}" if summary.get("errors") else "")
                + (f"; recorded {recorded:,} rows as version {summary.get('record_as')}" if recorded else "")
            )
        else:
            progress.say(f"replayed in {elapsed():.1f} s")
    _emit_replay(out, result, summary)
    return EXIT_OK


def _emit_replay(out: Output, result: Any, summary: dict[str, Any]) -> None:
    """json: summary, accuracy and group tables; csv/parquet: one row per replayed prediction;
    table: the summary, then the breakdown by model version."""
    import pandas as pd

    if out.format == "json":
        out.record(result.to_dict() if callable(getattr(result, "to_dict", None)) else summary)
        return
    rows = getattr(result, "df", None)
    if out.format in ("csv", "parquet"):
        if isinstance(rows, pd.DataFrame):
            out.frame(rows)
        else:
            out.record(summary)
        return
    text = _render_fields(summary, width=None)
    accuracy = getattr(result, "accuracy", None)
    if isinstance(accuracy, Mapping) and accuracy:
        text += "\naccuracy\n" + _render_fields(accuracy, width=None)
    by_version = getattr(result, "by_version", None)
    if isinstance(by_version, pd.DataFrame) and len(by_version):
        frame = by_version.reset_index() if by_version.index.name else by_version
        text += "\nby model version\n" + _render_table(frame, limit=None, width=out.width)
    out.record(summary, table=text)


# ---------------------------------------------------------------------------- parser


def _nonneg_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 or more")
    return v


def _pos_int(text: str) -> int:
    v = _nonneg_int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be 1 or more")
    return v


def _seconds(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(v) or v < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 or more seconds")
    return v


Command = Callable[[argparse.Namespace, "Output", "Progress"], int]
"""A subcommand: runs with the parsed arguments and returns the exit code."""

Extend = Callable[
    [
        Callable[[str, Command, list[argparse.ArgumentParser]], argparse.ArgumentParser],
        dict[str, argparse.ArgumentParser],
    ],
    None,
]
"""Adds subcommands: called with ``command(name, run, parents)`` and the shared option groups
(``common``, ``fmt``, ``window``). The analysis package adds ``monitor`` this way, so that
this module never imports it."""


def build_parser(extend: Extend | None = None) -> argparse.ArgumentParser:
    # Global options are accepted before and after the command name.
    common = argparse.ArgumentParser(add_help=False)
    g = common.add_argument_group("store and diagnostics")
    g.add_argument(
        "--store",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help=f"the store directory (default: ${STORE_ENV}, else ./{DEFAULT_STORE})",
    )
    g.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show the traceback of an error")
    g.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress lines on stderr")

    fmt = argparse.ArgumentParser(add_help=False)
    f = fmt.add_argument_group("output")
    f.add_argument(
        "--format",
        "-f",
        choices=FORMATS,
        default="table",
        help="table (default), csv, json (records, ISO 8601 times) or parquet (needs --output)",
    )
    f.add_argument("--output", "-o", metavar="FILE", help="write the result to FILE instead of stdout")
    f.add_argument(
        "--limit",
        type=_nonneg_int,
        metavar="N",
        help=f"at most N rows (a table shows {TABLE_ROWS} unless given; 0 = all)",
    )
    f.add_argument(
        "--max-width",
        type=_nonneg_int,
        metavar="CHARS",
        default=None,
        help=f"cut table cells wider than this (default {CELL_WIDTH}; 0 = never)",
    )

    window = argparse.ArgumentParser(add_help=False)
    w = window.add_argument_group("rows")
    w.add_argument("--model", metavar="NAME", help="only this model")
    w.add_argument("--start", metavar="TIME", help="from this time, inclusive (ISO 8601, UTC unless it says)")
    w.add_argument("--end", metavar="TIME", help="until this time, exclusive")
    w.add_argument("--last", metavar="DURATION", help="only the last DURATION, e.g. 1h, 7d")
    w.add_argument(
        "--include-live",
        action="store_true",
        help="also rows not sealed into Parquet yet (in the writers' live segments)",
    )

    parser = argparse.ArgumentParser(
        prog=PROG,
        parents=[common],
        description="Query, inspect and maintain a predlog replay store.",
        epilog="Run 'predlog COMMAND --help' for the options of a command.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(
        name: str, run: Callable[[argparse.Namespace, Output, Progress], int], parents: list[argparse.ArgumentParser]
    ) -> argparse.ArgumentParser:
        """A subcommand whose help is the first line of ``run``'s docstring, its description the rest."""
        summary, _, description = (inspect.getdoc(run) or "").partition("\n\n")
        cmd = sub.add_parser(
            name, parents=parents, help=summary[:1].lower() + summary[1:].rstrip("."), description=description
        )
        cmd.set_defaults(run=run)
        return cmd

    commands: dict[str, argparse.ArgumentParser] = {}
    parser.set_defaults(_commands=commands)

    p = command("query", cmd_query, [common, window, fmt])
    p.add_argument("sql", metavar="SQL", help="the query, or '-' to read it from stdin")

    p = command("user", cmd_user, [common, window, fmt])
    p.add_argument("user_id", metavar="ID")

    p = command("get", cmd_get, [common, fmt])
    p.add_argument("prediction_id", metavar="ID")
    p.add_argument("--include-live", action="store_true", help="also look in the writers' live segments")

    p = command("stats", cmd_stats, [common, fmt])

    p = command("compact", cmd_compact, [common, fmt])
    p.add_argument("--model", metavar="NAME", help="only this model's partitions (default: every model and the labels)")
    p.add_argument("--before", metavar="DATE", help="only partitions dated before DATE (YYYY-MM-DD)")
    p.add_argument(
        "--min-files",
        type=_pos_int,
        default=2,
        metavar="N",
        help="leave partitions with fewer than N files alone (default 2)",
    )
    p.add_argument("--target-rows", type=_pos_int, metavar="N", help="rows per output file")

    p = command("retain", cmd_retain, [common, fmt])
    p.add_argument("--days", type=_nonneg_int, required=True, metavar="N", help="days to keep before today")
    p.add_argument("--dry-run", action="store_true", help="only report what would be deleted")

    p = command("forget", cmd_forget, [common, fmt])
    p.add_argument("user_id", metavar="USER")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    p.add_argument(
        "--hashed",
        action="store_true",
        help="the store hashes user ids: hash USER with the key in PREDLOG_HASH_KEY first",
    )
    p.add_argument(
        "--wait-live-s",
        type=_seconds,
        default=90.0,
        metavar="S",
        help="how long to wait for running writers to seal rows of the user (default 90)",
    )

    p = command("replay", cmd_replay, [common, fmt])
    p.add_argument(
        "--module",
        "-m",
        required=True,
        metavar="PKG.MOD:FN",
        help="the function to replay through, e.g. mypkg.model:predict (the current directory is importable)",
    )
    p.add_argument("--model", metavar="NAME", help="the recorded model whose inputs are replayed")
    p.add_argument("--version", metavar="VERSION", help="only rows of this model version")
    p.add_argument("--start", metavar="TIME", help="from this time, inclusive")
    p.add_argument("--end", metavar="TIME", help="until this time, exclusive")
    p.add_argument("--last", metavar="DURATION", help="only the last DURATION, e.g. 1h, 7d")
    p.add_argument("--record-as", metavar="VERSION", help="record the new outputs in the store as this version")
    if extend is not None:
        extend(command, {"common": common, "fmt": fmt, "window": window})
    commands.update(sub.choices)
    return parser


# ---------------------------------------------------------------------------- main


def _one_line(exc: BaseException) -> str:
    """The message of ``exc`` on one line (DuckDB adds 'LINE 1: ...' and a caret line)."""
    text = str(exc)
    if isinstance(exc, KeyError) and len(exc.args) == 1 and type(exc).__str__ is KeyError.__str__:
        text = str(exc.args[0])
    lines = [ln.strip().lstrip("^").strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("LINE ")]
    text = " ".join(lines) or type(exc).__name__
    return re.sub(r"\s+([.,;:])(\s|$)", r"\1\2", text)


def _is_expected(exc: BaseException) -> bool:
    """Errors whose message is the whole story (no hint to look at a traceback)."""
    from ._errors import StoreError

    if isinstance(exc, (StoreError, CommandError, KeyError, ValueError, OSError, PermissionError)):
        return True
    mod = type(exc).__module__ or ""
    return mod.startswith("duckdb") or mod.startswith("_duckdb")


def main(argv: Sequence[str] | None = None, extend: Extend | None = None) -> int:
    """Run the ``predlog`` command line; returns the exit code."""
    parser = build_parser(extend)
    try:
        args = parser.parse_args(list(argv) if argv is not None else None)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return int(exc.code) if isinstance(exc.code, int) else EXIT_USAGE
    debug = getattr(args, "debug", False)
    args.store = getattr(args, "store", None) or os.environ.get(STORE_ENV) or DEFAULT_STORE
    progress = Progress(enabled=not getattr(args, "quiet", False))
    args.max_width_given = args.max_width is not None
    out = Output(
        format=args.format,
        path=args.output,
        limit=args.limit,
        width=CELL_WIDTH if args.max_width is None else (args.max_width or None),
    )
    command_parser = args._commands.get(args.command, parser)

    def usage_error(message: str) -> int:
        command_parser.print_usage(sys.stderr)
        print(f"{PROG} {args.command}: error: {message}", file=sys.stderr)
        return EXIT_USAGE

    if out.format == "parquet" and (out.path is None or out.path == "-"):
        return usage_error("--format parquet needs --output FILE (Parquet is not written to a terminal or a pipe)")

    def show_warning(
        message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None
    ) -> None:
        text = " ".join(str(message).split())
        print(f"{PROG}: warning: {text.removeprefix('predlog: ')}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.simplefilter("default")  # each distinct warning once, whatever the caller's filters
        warnings.showwarning = show_warning  # restored when the block ends
        return _run(args, out, progress, debug, usage_error)


def _run(
    args: argparse.Namespace, out: Output, progress: Progress, debug: bool, usage_error: Callable[[str], int]
) -> int:
    try:
        return int(args.run(args, out, progress))
    except UsageError as exc:
        if debug:
            raise
        return usage_error(str(exc))
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"\n{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader of stdout went away (``| head``): stop quietly, without a second error at exit.
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return EXIT_ERROR
    except Exception as exc:
        if debug:
            raise
        hint = "" if _is_expected(exc) else f" ({type(exc).__name__}; run with --debug for the traceback)"
        print(f"{PROG}: error: {_one_line(exc)}{hint}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())

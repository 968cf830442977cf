"""Hostile input: filter values are bound parameters, and SQL cannot leave the store."""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any

import duckdb
import pytest

import predlog
from predlog.replay import (
    FilterError,
    PredictionNotFoundError,
    QueryNotAllowedError,
    Store,
    UnknownModelError,
    UnknownVersionError,
)

CLASSIC = [
    "' OR '1'='1",
    "' OR 1=1 --",
    '" OR ""="',
    "'; DROP TABLE predictions; --",
    "') OR ('a'='a",
    "' UNION SELECT * FROM predictions --",
    "admin'--",
    "' OR 'x'='x' /*",
    "*/ OR 1=1 /*",
    "%' OR '%'='",
    "%",
    "_",
    "\\",
    "\\'",
    "''",
    "'''",
    '"',
    "$1",
    "?",
    ":name",
    "$$ OR 1=1 $$",
    "E'\\x27'",
    "' || (SELECT string_agg(user_id, ',') FROM predictions) || '",
    "'; COPY (SELECT 1) TO '/tmp/predlog-pwn.csv'; --",
    "'; ATTACH '/tmp/predlog-pwn.db' AS x; --",
    "'; INSTALL httpfs; LOAD httpfs; --",
    "'; SET enable_external_access=true; --",
    "1; SELECT * FROM read_csv('/etc/passwd')",
    "' AND 1=(SELECT count(*) FROM read_text('/etc/passwd')) --",
    "1' AND sleep(5) --",
    "alice' OR user_id LIKE '%",
    "alice\x00' OR '1'='1",
    "\u2019 OR 1=1 --",
    "\u02bc OR 1=1 --",
    "\uff07 OR \uff11=\uff11",
    "../../etc/passwd",
    "model=fraud/../..",
    "fraud' OR model='alt",
    "\n; DROP VIEW predictions",
    "\t' OR '1'='1",
    "\U0001f642' OR '\U0001f642'='\U0001f642",
    "null",
    "NULL",
    "None",
    "true",
    "1e309",
    "-1",
    " ",
    "\r\n",
    "\x00",
    "a\x00b",
    "\\x00",
    "0x27",
    "CHAR(39)",
    "'||'",
    "' OR features.age > 0 --",
    "' OR context.country IS NOT NULL --",
    "']) OR true --",
    "${jndi:ldap://x}",
    "<script>alert(1)</script>",
    "%00",
    "%27%20OR%201=1",
    "' OR TRUE; --",
    "1 OR 1=1",
    "u' UNION ALL BY NAME SELECT 1 --",
]

VARIATIONS = [
    lambda p: p,
    lambda p: p.upper(),
    lambda p: p + "--",
    lambda p: "alice" + p,
    lambda p: p + "\x00",
    lambda p: "/*" + p + "*/",
    lambda p: p.replace("'", "''"),
    lambda p: p + ";",
    lambda p: "fraud" + p,
    lambda p: p * 2,
    lambda p: " " + p + " ",
    lambda p: p + " -- \u00e9\u4e2d",
    lambda p: p.replace(" ", "/**/"),
    lambda p: '"' + p + '"',
    lambda p: p + "\n",
    lambda p: "\\" + p,
    lambda p: p + "'",
    lambda p: "'" + p,
]

# Real values in the store, some of them hostile-looking themselves.
USERS = [
    "alice",
    "bob",
    "o'brien",
    'x" OR "1"="1',
    "robert'); DROP TABLE predictions;--",
    "\u30e6\u30fc\u30b6\u30fc",
    "nul\x00byte",
]
COUNTRIES = ["FR", "DE", "l'Île", "'; --"]


def payloads(n: int = 1000) -> list[str]:
    real = set(USERS) | set(COUNTRIES) | {"fraud", "alt", "v1", "v2", "ok", "error"}
    out: list[str] = []
    seen: set[str] = set()
    for vary, p in itertools.product(VARIATIONS, CLASSIC):
        q = vary(p)
        if q not in seen and q not in real:
            seen.add(q)
            out.append(q)
    assert len(out) >= n
    return out[:n]


PAYLOADS = payloads()


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A store with two models whose user ids and context values include quotes and NULs."""
    root = tmp_path_factory.mktemp("hostile") / "store"
    fraud = predlog.Recorder(store=str(root), model="fraud", version="v1")
    alt = predlog.Recorder(store=str(root), model="alt", version="v2")
    score = fraud.capture(lambda x: 0.5)
    other = alt.capture(lambda x: [1, 2])
    expected: dict[str, int] = {}
    for i, user in enumerate(USERS * 3):
        with predlog.context(user_id=user, request_id=f"r{i}", country=COUNTRIES[i % len(COUNTRIES)]):
            score({"age": 20 + i, "note": USERS[(i + 1) % len(USERS)]})
            fraud.log_label(i % 2, prediction_id=predlog.last_prediction_id())
            other({"age": 1})
        expected[user] = expected.get(user, 0) + 2
    for rec in (fraud, alt):
        assert rec.flush(timeout_s=30)
        rec.shutdown()
    # A second store next door, and one whose name extends this one's: neither may be read.
    other_store = root.parent / "other"
    spy = predlog.Recorder(store=str(other_store), model="secret")
    spy.capture(lambda x: 1)({"secret": "s3cr3t"})
    assert spy.flush(timeout_s=30)
    spy.shutdown()
    sibling = Path(str(root) + "-evil")
    sibling.mkdir()
    (sibling / "x.csv").write_text("a\n1\n")
    with Store(root) as s:
        yield s, expected, other_store, sibling


def test_exact_values_with_quotes_and_nuls_match_only_themselves(hostile: Any) -> None:
    s, expected, _, _ = hostile
    total = len(s.predictions())
    assert total == sum(expected.values())
    for user, n in expected.items():
        df = s.user(user)
        assert len(df) == n and set(df["user_id"]) == {user}, user
        assert len(s.predictions(where={"user_id": user})) == n
    for country in COUNTRIES:
        df = s.predictions(where={"context.country": country})
        assert len(df) > 0 and {c["country"] for c in df["context"]} == {country}
    assert len(s.predictions(where={"features.note": "o'brien"}, model="fraud")) == 3


SQL_CHANNELS = ["user_id", "version", "request_id", "status", "country", "note", "ops", "get", "labeled", "age"]


@pytest.mark.parametrize("channel", [*SQL_CHANNELS, "model"])
def test_every_payload_returns_nothing_outside_the_filter(hostile: Any, channel: str) -> None:
    """Every payload goes alone through model=, half of them alone through one SQL channel each
    (a round robin, to keep this fast), and all of them at once, as one list, through each channel."""
    s, expected, _, _ = hostile
    total = sum(expected.values())
    if channel == "model":
        single = PAYLOADS
    else:
        share = PAYLOADS[SQL_CHANNELS.index(channel) :: len(SQL_CHANNELS)]
        single = share[::2]
    for p in single:
        if channel == "model":
            with pytest.raises(UnknownModelError):
                s.predictions(model=p)
            continue
        if channel == "get":
            with pytest.raises(PredictionNotFoundError):
                s.get(p)
            continue
        if channel == "age":  # a numeric column: text that is not a number is refused, clearly
            try:
                assert s.predictions(model="fraud", where={"features.age": p}).empty
            except FilterError:
                pass
            continue
        if channel == "version":  # a version the store does not hold is refused, listing those it holds
            with pytest.raises(UnknownVersionError) as info:
                _query(s, channel, p)
            assert info.value.present == ["v1", "v2"]
            continue
        if channel == "status":  # only 'ok' and 'error' are statuses
            with pytest.raises(FilterError, match="is not a status"):
                _query(s, channel, p)
            continue
        df = _query(s, channel, p)
        assert df.empty, (channel, p, df)
    # All payloads in one IN list, plus one real value: exactly that value's rows come back.
    if channel in ("user_id", "labeled"):
        df = _query(s, channel, [*PAYLOADS, "o'brien"])
        assert set(df["user_id"]) == {"o'brien"}
    elif channel in ("country", "note"):
        real = {"country": "l'Île", "note": "nul\x00byte"}[channel]
        df = _query(s, channel, [*PAYLOADS, real])
        column = "context" if channel == "country" else "features"
        assert len(df) > 0 and {v[channel] for v in df[column]} == {real}
    elif channel in ("request_id", "ops"):
        assert _query(s, channel, PAYLOADS).empty
    elif channel == "version":
        with pytest.raises(UnknownVersionError):
            _query(s, channel, PAYLOADS)
    elif channel == "status":
        with pytest.raises(FilterError):
            _query(s, channel, PAYLOADS)
    assert len(s.predictions()) == total  # the store is intact


def _query(s: Store, channel: str, value: Any) -> Any:
    if channel == "user_id":
        return s.user(value) if isinstance(value, str) else s.predictions(user_id=value)
    if channel == "version":
        return s.predictions(version=value)
    if channel == "request_id":
        return s.predictions(request_id=value)
    if channel == "status":
        return s.predictions(status=value)
    if channel == "country":
        return s.predictions(where={"context.country": value})
    if channel == "note":
        return s.predictions(model="fraud", where={"features.note": value})
    if channel == "ops":
        if isinstance(value, str):
            return s.predictions(where={"user_id": ("=", value), "model_version": ("!=", value)})
        return s.predictions(where={"user_id": ("in", value), "request_id": ("not in", value)})
    if channel == "labeled":
        return s.labeled(user_id=value)
    raise AssertionError(channel)


def test_payloads_as_column_names_are_rejected(hostile: Any) -> None:
    s, _, _, _ = hostile
    for p in PAYLOADS[::10]:
        with pytest.raises(Exception) as info:
            s.predictions(where={p: 1})
        assert isinstance(info.value, ValueError)  # UnknownColumnError or FilterError
        with pytest.raises(ValueError):
            s.predictions(columns=["prediction_id", f"features.{p}"])


def test_sql_cannot_read_outside_the_store(hostile: Any, tmp_path: Path) -> None:
    s, _, other_store, sibling = hostile
    root = s.root
    other_file = next(other_store.glob("predictions/**/*.parquet"))
    reads = [
        "select * from read_csv('/etc/passwd')",
        "select * from read_csv_auto('/etc/passwd')",
        "select * from read_text('/etc/hostname')",
        "select * from read_blob('/etc/passwd')",
        "select * from read_json('/etc/passwd')",
        "select * from glob('/etc/*')",
        "select * from sniff_csv('/etc/passwd')",
        "select * from parquet_metadata('/etc/passwd')",
        f"select * from read_parquet('{other_file}')",
        f"select * from read_parquet('{other_store}/predictions/**/*.parquet')",
        f"select * from read_parquet('{root}/../other/predictions/**/*.parquet')",
        f"select * from read_csv('{sibling}/x.csv')",
        f"select * from glob('{sibling}/*')",
        "select * from read_csv('/proc/self/environ')",
        "select * from read_csv('~/.bashrc')",
        "select * from read_csv('https://example.com/x.csv')",
        "select * from read_parquet('s3://bucket/x.parquet')",
        "select * from duckdb_secrets()",
    ]
    for q in reads:
        with pytest.raises((QueryNotAllowedError, duckdb.Error)) as info:
            s.sql(q)
        assert not isinstance(info.value, AssertionError), q
    # An own-SQL where= string and a relation's connection are locked the same way.
    with pytest.raises(QueryNotAllowedError):
        s.predictions(where="user_id in (select column0 from read_csv('/etc/passwd'))")
    rel = s.relation()
    with pytest.raises(duckdb.Error):
        rel.query("r", "select * from read_csv('/etc/passwd')").fetchall()


def test_sql_cannot_write_attach_install_or_unlock(hostile: Any, tmp_path: Path) -> None:
    s, expected, _, _ = hostile
    out = tmp_path / "out.csv"
    inside = Path(s.root) / "predictions" / "model=fraud" / "evil.parquet"
    statements = [
        f"copy (select 1) to '{out}'",
        f"copy (select * from predictions) to '{inside}' (format parquet)",
        f"export database '{tmp_path}/db'",
        f"attach '{tmp_path}/x.db' as x",
        "attach ':memory:' as x",
        "detach memory",
        "install httpfs",
        "load httpfs",
        "force install httpfs from 'http://example.com'",
        "set enable_external_access = true",
        "set allowed_directories = ['/']",
        "set lock_configuration = false",
        "reset lock_configuration",
        "pragma enable_profiling",
        "call pragma_version()",
        "create secret (type s3, key_id 'x', secret 'y')",
        "create table t as select * from predictions",
        "drop view predictions",
        "select 1; copy (select 1) to 'x.csv'",
        f"explain analyze copy (select 1) to '{out}'",
        f"select * from query('copy (select 1) to ''{out}''')",
        "use memory",
        "checkpoint",
    ]
    for q in statements:
        with pytest.raises((QueryNotAllowedError, duckdb.Error)):
            s.sql(q)
    assert not out.exists() and not inside.exists() and not (tmp_path / "x.db").exists()
    assert len(s.predictions()) == sum(expected.values())
    # The connection handed to predlog's own modules is locked to the store as well.
    with s.connection() as con:
        for q in (
            "select * from read_csv('/etc/passwd')",
            f"copy (select 1) to '{out}'",
            f"attach '{tmp_path}/x.db' as x",
            "set enable_external_access = true",
            "load httpfs",
        ):
            with pytest.raises(duckdb.Error):
                con.execute(q)
        assert con.execute("select count(*) from predictions").fetchone()[0] == sum(expected.values())
    assert not out.exists() and not (tmp_path / "x.db").exists()
    assert not os.path.exists("/tmp/predlog-pwn.csv") and not os.path.exists("/tmp/predlog-pwn.db")

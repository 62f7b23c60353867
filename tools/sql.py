"""A read-only SQL tool over a small in-memory SQLite database built from a spec.

The database is built from a JSON-able spec (tables, declared columns, rows) in memory, then
locked before the agent sees it. Every guard below is enforced by SQLite, not by looking at the
SQL text.

Guards:
- Writes: the connection runs with ``PRAGMA query_only = ON`` and an authorizer
  (``set_authorizer``) that allows only reading: SELECT, column reads, function calls and
  recursive CTEs. INSERT, UPDATE, DELETE, CREATE, DROP, ALTER, transactions, ANALYZE, VACUUM
  and every PRAGMA except a few read-only schema pragmas (``table_info`` and friends) are
  denied, so neither the data nor the schema can change, and ``query_only`` cannot be unset.
- Files: the database lives in memory; ATTACH (also ``VACUUM INTO``, which attaches a file) is
  denied and ``SQLITE_LIMIT_ATTACHED`` is 0; extension loading stays off (Python's default).
- Runaway queries: a progress handler aborts a statement (execution and fetching) once it has
  run ``time_limit_s`` seconds (default 2 s) and the call raises `ToolTimeout`. The handler runs
  between VM instructions, not inside one function call, so no single call may be slow: strings
  and blobs are capped at ``MAX_VALUE_CHARS`` (20,000; three ``instr()`` calls over 999,000-char
  strings once ran 16 s), LIKE/GLOB patterns at 200 characters, and ``printf``/``format``
  refuse widths and precisions above that cap before formatting (``printf('%.*c', 1e9, 'x')``
  once ran 3.7 s building a string it then discarded).
- Huge values and outputs: SQL text is capped by ``SQLITE_LIMIT_SQL_LENGTH``; results show at most ``max_rows`` rows (default 50) and
  about 1,800 characters, then say how many rows were left out.
- Nondeterminism: ``random()`` and ``randomblob()`` are denied, so the same query always gives
  the same result on the same database.
- Threads: each `SQLDatabase` owns its connection (``check_same_thread=False``) and serializes
  its use with a lock, so an env may be stepped from a worker thread.

Does not guard: memory used by one statement within its time limit (a large sort or join may
use a few hundred MB before the limit stops it); time functions such as ``date('now')`` (their
results change over time); total CPU across many calls (each call gets its own budget).
Table-valued pragma functions (``pragma_table_info(...)``) are unavailable: SQLite reports
them to the authorizer as a schema write.
"""

from __future__ import annotations

import itertools
import re
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any

from agentopd.tools.core import ToolFailure, ToolTimeout

TIME_LIMIT_S = 2.0
MAX_ROWS = 50
MAX_TABLE_CHARS = 1800
MAX_CELL_CHARS = 40
MAX_COUNTED_ROWS = 100_000
"""Rows past the first MAX_ORACLE_ROWS are counted up to this many more (then "at least N")."""
MAX_ORACLE_ROWS = 1000
"""`query_rows` (used by verifiers, not by the agent) keeps at most this many rows."""

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_READ_PRAGMAS = frozenset(
    {"table_info", "table_xinfo", "table_list", "index_list", "index_info", "foreign_key_list"}
)
_DENIED_FUNCTIONS = frozenset({"random", "randomblob", "load_extension"})
MAX_VALUE_CHARS = 20_000
"""SQLITE_LIMIT_LENGTH: the longest string or blob any expression may build."""
_FMT_NUMBER = re.compile(r"%[-+ #0,!]*(\d+)?(?:\.(\d+))?")
_ALLOWED_ACTIONS = frozenset(
    {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}
)
_ACTION_NAMES = {
    getattr(sqlite3, "SQLITE_" + n.replace(" ", "_")): n
    for n in (
        "CREATE INDEX", "CREATE TABLE", "CREATE TEMP INDEX", "CREATE TEMP TABLE",
        "CREATE TEMP TRIGGER", "CREATE TEMP VIEW", "CREATE TRIGGER", "CREATE VIEW", "DELETE",
        "DROP INDEX", "DROP TABLE", "DROP TEMP INDEX", "DROP TEMP TABLE", "DROP TEMP TRIGGER",
        "DROP TEMP VIEW", "DROP TRIGGER", "DROP VIEW", "INSERT", "PRAGMA", "TRANSACTION",
        "UPDATE", "ATTACH", "DETACH", "ALTER TABLE", "REINDEX", "ANALYZE", "CREATE VTABLE",
        "DROP VTABLE", "SAVEPOINT",
    )
}


def _ident(name: str) -> str:
    if not isinstance(name, str) or not _IDENT.match(name):
        raise ValueError(f"bad SQL identifier in database spec: {name!r}")
    return name


def format_value(value: Any) -> str:
    """How one SQL value is shown: NULL, integers as is, floats to at most 6 decimals."""
    if value is None:
        return "NULL"
    if isinstance(value, float):
        return repr(round(value, 6))
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    text = str(value).replace("\n", " ")
    return text if len(text) <= MAX_CELL_CHARS else text[: MAX_CELL_CHARS - 3] + "..."


def format_table(columns: list[str], rows: list[tuple], more: str = "") -> str:
    """A small aligned text table, header first, then rows, then `more` if given."""
    cells = [[format_value(v) for v in row] for row in rows]
    widths = [len(c) for c in columns]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = [
        " | ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip(),
        "-+-".join("-" * w for w in widths),
    ]
    lines += [" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    if more:
        lines.append(more)
    return "\n".join(lines)


class SQLDatabase:
    """One read-only in-memory database and the agent's tools over it.

    ``spec`` is ``{"tables": [{"name": str, "columns": [[name, declaration], ...],
    "rows": [[value, ...], ...]}, ...]}``; declarations are SQLite column definitions such as
    ``"INTEGER PRIMARY KEY"`` or ``"INTEGER REFERENCES customers(id)"``. Building is
    deterministic: the same spec gives the same database and the same tool outputs.
    """

    def __init__(
        self,
        spec: dict[str, Any],
        time_limit_s: float = TIME_LIMIT_S,
        max_rows: int = MAX_ROWS,
    ):
        self.time_limit_s = time_limit_s
        self.max_rows = max_rows
        self.described_tables: list[str] = []
        """Tables the agent has described (successful `describe_table` calls), in order."""
        self._lock = threading.RLock()
        self._deadline = float("inf")
        self._timed_out = False
        self._denied: str | None = None
        self._rows_cache: dict[str, list[tuple] | Exception] = {}
        self._conn = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
        self._plain: sqlite3.Connection | None = None
        """A bare connection that runs the real printf once `_bounded_printf` has checked it."""
        self._tables: dict[str, dict[str, Any]] = {}
        for table in spec["tables"]:
            self._create(table)
        self._descriptions = {name: self._describe(name) for name in self._tables}
        self._lock_down()

    # ---- building ----------------------------------------------------------------------
    def _create(self, table: dict[str, Any]) -> None:
        name = _ident(table["name"])
        cols = [(_ident(c), str(decl)) for c, decl in table["columns"]]
        self._conn.execute(f"CREATE TABLE {name} ({', '.join(f'{c} {d}' for c, d in cols)})")
        marks = ", ".join("?" for _ in cols)
        self._conn.executemany(f"INSERT INTO {name} VALUES ({marks})", [tuple(r) for r in table["rows"]])
        self._tables[name.lower()] = {"name": name, "columns": cols, "count": len(table["rows"])}

    def _describe(self, key: str) -> str:
        t = self._tables[key]
        lines = [f"Table {t['name']} ({t['count']} rows)", "Columns:"]
        lines += [f"  {c} {d}" for c, d in t["columns"]]
        cur = self._conn.execute(f"SELECT * FROM {t['name']} LIMIT 3")
        sample = cur.fetchall()
        if sample:
            lines.append("Sample rows:")
            lines.append(format_table([c for c, _ in t["columns"]], sample))
        return "\n".join(lines)

    def _lock_down(self) -> None:
        conn = self._conn
        conn.execute("PRAGMA query_only = ON")
        conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
        conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, MAX_VALUE_CHARS)
        conn.setlimit(sqlite3.SQLITE_LIMIT_SQL_LENGTH, 20_000)
        conn.setlimit(sqlite3.SQLITE_LIMIT_LIKE_PATTERN_LENGTH, 200)
        for name in ("printf", "format"):  # shadows the built-ins: bounded, then the real one
            conn.create_function(name, -1, self._bounded_printf, deterministic=True)
        conn.set_authorizer(self._authorize)
        conn.set_progress_handler(self._progress, 100)

    def _authorize(self, action: int, arg1: str | None, arg2: str | None, db: str | None, trigger: str | None) -> int:
        if action in _ALLOWED_ACTIONS:
            if action == sqlite3.SQLITE_FUNCTION and (arg2 or "").lower() in _DENIED_FUNCTIONS:
                self._deny(f"{arg2}() is not allowed: query results must be reproducible")
                return sqlite3.SQLITE_DENY
            return sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_PRAGMA and (arg1 or "").lower() in _READ_PRAGMAS:
            return sqlite3.SQLITE_OK
        what = _ACTION_NAMES.get(action, f"action {action}")
        if action == sqlite3.SQLITE_PRAGMA:
            what = f"PRAGMA {arg1}"
        self._deny(f"SQLite denied {what}")
        return sqlite3.SQLITE_DENY

    def _bounded_printf(self, fmt: Any = None, *args: Any) -> Any:
        """SQLite's printf, refused when a width or precision exceeds MAX_VALUE_CHARS."""
        if fmt is None:
            return None
        text = str(fmt)
        widths = [int(g) for m in _FMT_NUMBER.finditer(text) for g in m.groups() if g]
        if "*" in text:
            widths += [abs(int(a)) for a in args if isinstance(a, (int, float)) and abs(a) < 1e300]
        if any(w > MAX_VALUE_CHARS for w in widths):
            self._deny(f"printf: width or precision larger than {MAX_VALUE_CHARS} refused")
            raise ValueError(self._denied)
        if self._plain is None:
            self._plain = sqlite3.connect(":memory:", check_same_thread=False)
            self._plain.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, MAX_VALUE_CHARS)
        marks = ", ".join("?" * (1 + len(args)))
        return self._plain.execute(f"SELECT printf({marks})", (text, *args)).fetchone()[0]

    def _deny(self, why: str) -> None:
        if self._denied is None:  # the first denial names the statement; later ones follow
            self._denied = why

    def _progress(self) -> int:
        if time.monotonic() > self._deadline:
            self._timed_out = True
            return 1
        return 0

    # ---- running -----------------------------------------------------------------------
    def _run(self, sql: str, consume: Callable[[sqlite3.Cursor], Any]) -> Any:
        """Run one statement under the time limit and hand its cursor to `consume`."""
        if not isinstance(sql, str) or not sql.strip():
            raise ToolFailure("empty SQL query")
        with self._lock:
            self._denied, self._timed_out = None, False
            self._deadline = time.monotonic() + self.time_limit_s
            cur = None
            try:
                cur = self._conn.execute(sql)
                return consume(cur)
            except (sqlite3.Error, sqlite3.Warning) as e:
                if self._timed_out:  # the progress handler stopped it
                    raise ToolTimeout(f"query stopped after {self.time_limit_s:g} s") from None
                if self._denied:
                    if self._denied.startswith("SQLite denied"):
                        verb = sql.split(None, 1)[0].upper()
                        raise ToolFailure(
                            f"the database is read-only: {verb} statement refused ({self._denied}). "
                            "Only SELECT queries can run."
                        ) from None
                    raise ToolFailure(self._denied) from None
                raise ToolFailure(f"SQL error: {e}") from None
            finally:
                self._deadline = float("inf")
                if cur is not None:
                    cur.close()

    def query_rows(self, sql: str) -> list[tuple]:
        """All result rows of `sql` (up to MAX_ORACLE_ROWS), cached; for verifiers and oracles.

        Raises ToolFailure or ToolTimeout like `run_query`.
        """
        hit = self._rows_cache.get(sql)
        if hit is None:
            try:
                hit = self._run(sql, lambda cur: cur.fetchmany(MAX_ORACLE_ROWS))
            except (ToolFailure, ToolTimeout) as e:
                hit = e
            self._rows_cache[sql] = hit
        if isinstance(hit, Exception):
            raise hit
        return hit

    def _render(self, sql: str, cur: sqlite3.Cursor) -> str:
        if cur.description is None:
            return "(statement returned no result set)"
        columns = [d[0] for d in cur.description]
        kept = cur.fetchmany(MAX_ORACLE_ROWS)
        self._rows_cache[sql] = kept  # a verifier asking for this query's rows won't rerun it
        rows: list[tuple] = []
        size = 0
        for row in kept:
            size += sum(len(format_value(v)) + 3 for v in row)
            if len(rows) >= self.max_rows or size > MAX_TABLE_CHARS:
                break
            rows.append(row)
        else:
            return format_table(columns, rows, f"({len(rows)} row{'' if len(rows) == 1 else 's'})")
        extra = sum(1 for _ in itertools.islice(cur, MAX_COUNTED_ROWS))
        left = len(kept) - len(rows) + extra
        more = f"at least {left}" if extra >= MAX_COUNTED_ROWS else str(left)
        word = "row" if left == 1 else "rows"
        return format_table(columns, rows, f"... {more} more {word} (showing the first {len(rows)})")

    # ---- tools -------------------------------------------------------------------------
    def list_tables(self) -> str:
        """List the tables in the database with their row counts."""
        return "\n".join(f"{t['name']} ({t['count']} rows)" for t in self._tables.values())

    def describe_table(self, table: str) -> str:
        """Show a table's columns (name, type, references) and its first rows.

        Args:
            table: Name of the table, e.g. "orders".
        """
        key = table.strip().strip("`\"'[]").lower()
        if key not in self._tables:
            known = ", ".join(t["name"] for t in self._tables.values())
            raise ToolFailure(f"no table named {table!r}. Tables: {known}")
        with self._lock:
            if key not in self.described_tables:
                self.described_tables.append(key)
        return self._descriptions[key]

    def run_query(self, sql: str) -> str:
        """Run one read-only SQL query (SQLite dialect) and return the result as a table.

        Args:
            sql: A single SELECT statement (WITH ... SELECT is fine), e.g. "SELECT name FROM customers WHERE city = 'Porto'". The database cannot be changed. At most 50 rows are shown.
        """
        return self._run(sql, lambda cur: self._render(sql, cur))

    def tools(self) -> list[Callable[..., str]]:
        """The agent's tools, bound to this database."""
        return [self.list_tables, self.describe_table, self.run_query]

    def close(self) -> None:
        with self._lock:
            self._conn.close()

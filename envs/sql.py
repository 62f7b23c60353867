"""SQL: questions about a small SQLite database, answered through a read-only query tool.

Each task carries its database (``db``), and per user request the oracle's SQL (``queries``,
answer in the first column), the tables the oracle describes first (``describe``; empty when
the request itself lists the schema) and the expected answer (``answers``: a number, or names
that must all be mentioned while no other candidate from the same column is).

The oracle acts from any state: it answers once a successful query in this request has
returned the oracle query's result (compared column by column as multisets, numbers to 2
decimals; it may leave out columns other than the answer column, which comes first, but not
add any); otherwise it describes the needed tables the agent has not
described yet in this episode, then runs its query. A student call passes the per-turn check
when it runs a query that yields that result, describes a table the oracle is about to
describe, or lists the tables while the oracle is still exploring the schema.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from agentopd.envs.base import ToolEnv, last_number, numbers_match
from agentopd.tools.calculator import format_number
from agentopd.tools.core import ToolCall, ToolFailure, ToolTimeout
from agentopd.tools.sql import SQLDatabase


def _norm(value: Any) -> Any:
    """Compare SQL values loosely: numbers to 2 decimals, text as is."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return round(float(value), 2)
    return value


def _answer_part(text: str) -> str:
    """The text after the last ``Answer:``, else all of it."""
    parts = re.split(r"answer:", text, flags=re.IGNORECASE)
    return parts[-1] if len(parts) > 1 else text


def mentions(text: str, item: str) -> bool:
    """Whether `item` occurs in `text` as a whole phrase, ignoring case."""
    return re.search(r"(?<!\w)" + re.escape(item.lower()) + r"(?!\w)", text.lower()) is not None


class SQLEnv(ToolEnv):
    family = "sql"
    instructions = (
        "You are a careful data analyst. Answer questions about a SQLite database using its "
        "tools: list_tables and describe_table show the schema, run_query runs one read-only "
        "SELECT query. Base every answer on query results, never on guesses."
    )
    answer_format = (
        "Give your final answer as: Answer: <number, or the requested name(s) separated by commas>"
    )
    example = """
user: How many dogs are older than 5?
assistant: <tool_call>{"name": "describe_table", "arguments": {"table": "pets"}}</tool_call>
tool: Table pets (12 rows)
Columns:
  id INTEGER PRIMARY KEY
  name TEXT
  species TEXT
  age INTEGER
assistant: <tool_call>{"name": "run_query", "arguments": {"sql": "SELECT COUNT(*) FROM pets WHERE species = 'dog' AND age > 5"}}</tool_call>
tool: COUNT(*)
--------
3
(1 row)
assistant: Answer: 3
"""

    def _init_state(self, task) -> None:
        self.close()
        self.db = SQLDatabase(task.data["db"])
        self.queries: list[str] = list(task.data["queries"])
        self.describe: list[list[str]] = [list(d) for d in task.data["describe"]]
        self.answers: list[dict[str, Any]] = list(task.data["answers"])
        if not len(self.queries) == len(self.describe) == len(self.answers) == len(task.requests):
            raise ValueError(f"task {task.id}: queries/describe/answers do not match its requests")

    def _tools(self):
        return self.db.tools()

    def close(self) -> None:
        db = getattr(self, "db", None)
        if db is not None:
            db.close()
            self.db = None

    # ---- verifier -----------------------------------------------------------------------
    def _check_request(self, index: int, answer: str) -> bool:
        want = self.answers[index]
        if want["kind"] == "number":
            return numbers_match(last_number(answer), float(want["value"]))
        text = _answer_part(answer)
        return all(mentions(text, str(x)) for x in want["items"]) and not any(
            mentions(text, str(x)) for x in want.get("exclude", [])
        )

    # ---- oracle -------------------------------------------------------------------------
    def _columns(self, sql: Any) -> list[Counter] | None:
        """Each result column of `sql` as a multiset of loosely compared values; None on error."""
        if not isinstance(sql, str):
            return None
        try:
            rows = self.db.query_rows(sql)
        except (ToolFailure, ToolTimeout):
            return None
        if not rows:
            return None
        return [Counter(_norm(row[j]) for row in rows) for j in range(len(rows[0]))]

    def _yields_target(self, sql: Any, index: int) -> bool:
        """Whether `sql` returns the oracle query's result: the same rows, with its answer
        (first) column, and no column that is not in the oracle's result (order may differ)."""
        got, want = self._columns(sql), self._columns(self.queries[index])
        if got is None or want is None:
            return False
        if sum(got[0].values()) != sum(want[0].values()):
            return False
        return want[0] in got and all(col in want for col in got)

    def _obtained(self, index: int) -> bool:
        return any(
            self._yields_target(c.arguments.get("sql"), index) for c, _ in self.log.ok_results("run_query")
        )

    def _answer_text(self, index: int) -> str:
        want = self.answers[index]
        if want["kind"] == "number":
            return format_number(float(want["value"]))
        return ", ".join(str(x) for x in want["items"])

    def _missing_tables(self, index: int) -> list[str]:
        return [t for t in self.describe[index] if t not in self.db.described_tables]

    def oracle_action(self) -> str:
        i = self.request_index
        if self._obtained(i):
            return f"Answer: {self._answer_text(i)}"
        missing = self._missing_tables(i)
        if missing:
            return self.tool_format.format([ToolCall("describe_table", {"table": t}) for t in missing])
        return self.format_call("run_query", {"sql": self.queries[i]})

    def _same_call(self, student: ToolCall, expert: ToolCall) -> bool:
        if student.name == "run_query":
            return self._yields_target(student.arguments.get("sql"), self.request_index)
        if student.name == "describe_table" and expert.name == "describe_table":
            got = str(student.arguments.get("table", "")).strip().strip("`\"'[]").lower()
            return got == expert.arguments["table"]
        if student.name == "list_tables":
            return expert.name == "describe_table"  # still exploring the schema
        return super()._same_call(student, expert)

    def skill_card(self) -> dict[str, Any]:
        workflow: list[str] = []
        described: set[str] = set()
        for i in range(len(self.task.requests)):
            new = [t for t in self.describe[i] if t not in described]
            described.update(new)
            workflow += [f"describe_table({t})" for t in new]
            workflow += [f"run_query({self.queries[i]})", f"Answer: {self._answer_text(i)}"]
        tables = ", ".join(sorted({t for d in self.describe for t in d})) or "given in the request"
        return {
            "success_analysis": "Solved tasks look at the schema first (describe_table on the "
            f"tables the question needs: {tables}), write one SELECT that computes exactly the "
            "asked value (JOIN on the *_id columns, GROUP BY for per-row totals, ORDER BY ... "
            "DESC LIMIT 1 for 'the most'), and copy the value or names from the result into "
            "'Answer: ...'.",
            "mistake_analysis": "Common failures: guessing column names instead of describing "
            "the table, trying to modify the read-only database, joining on the wrong key, "
            "forgetting the filter of the earlier request when a follow-up says 'of them' or "
            "'that customer', not rounding when asked, and listing extra names in the answer "
            "(only the requested names may appear).",
            "golden_workflow": workflow,
        }

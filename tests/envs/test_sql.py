"""The sql family: read-only SQLite tool, env verifier and oracle, and the released suite."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import gymnasium
import pytest

import agentopd  # noqa: F401  (registers the envs)
from agentopd.envs.sql import SQLEnv
from agentopd.envs.suites import load_tasks, suite_path
from agentopd.tasks.sql import generate as gen
from agentopd.tools.core import format_tool_call
from agentopd.tools.sql import SQLDatabase


def call(name: str, **arguments) -> str:
    return format_tool_call(name, arguments)


def query(sql: str) -> str:
    return call("run_query", sql=sql)


@pytest.fixture(scope="module")
def train_tasks():
    return load_tasks("sql", "train")


def make_env(task, split="train"):
    env = gymnasium.make("agentopd/SQL-v0", split=split)
    env.reset(options={"task": task.id})
    return env


def first_task(tasks, theme: str, difficulty: int | None = None):
    return next(t for t in tasks if t.data["theme"] == theme and difficulty in (None, t.difficulty))


def snapshot(db: SQLDatabase) -> str:
    tables = [line.split()[0] for line in db.list_tables().splitlines()]
    return json.dumps({t: db.query_rows(f"SELECT * FROM {t} ORDER BY id") for t in tables})


# ---- the tool ------------------------------------------------------------------------------
WRITES = [
    "INSERT INTO customers (id, name, city, signup_year) VALUES (999, 'Mallory', 'Oslo', 2020)",
    "UPDATE customers SET city = 'Nowhere'",
    "DELETE FROM orders",
    "DROP TABLE orders",
    "CREATE TABLE evil (x INTEGER)",
    "CREATE TEMP TABLE evil (x INTEGER)",
    "CREATE VIEW v AS SELECT * FROM customers",
    "CREATE INDEX i ON customers(name)",
    "ALTER TABLE customers ADD COLUMN pwned TEXT",
    "ALTER TABLE customers RENAME TO clients",
    "REPLACE INTO customers (id, name) VALUES (1, 'Mallory')",
    "PRAGMA query_only = OFF",
    "PRAGMA writable_schema = ON",
    "PRAGMA user_version = 7",
    "BEGIN",
    "ANALYZE",
    "VACUUM",
    "SELECT random()",
]


def test_read_only_is_enforced_by_sqlite(train_tasks, tmp_path):
    env = make_env(first_task(train_tasks, "shop"))
    db = env.unwrapped.db
    before = snapshot(db)
    attach = f"ATTACH DATABASE '{tmp_path / 'x.db'}' AS x"
    vacuum = f"VACUUM INTO '{tmp_path / 'copy.db'}'"
    for sql in [*WRITES, attach, vacuum, "PRAGMA query_only = OFF", WRITES[0]]:
        obs, reward, terminated, truncated, info = env.step(query(sql))
        assert info["tool_errors"] == 1, sql
        assert info["tool_results"][0].error == "tool_error", sql
        assert obs[0]["role"] == "tool" and obs[0]["content"].startswith("Error:"), sql
        assert not terminated
    assert snapshot(db) == before
    assert list(tmp_path.iterdir()) == []  # neither ATTACH nor VACUUM INTO created a file
    obs, *_ = env.step(query("SELECT COUNT(*) FROM customers WHERE city = 'Nowhere'"))
    assert obs[0]["content"].splitlines()[2].strip() == "0"


def test_write_error_says_read_only():
    db = SQLDatabase({"tables": [{"name": "t", "columns": [["id", "INTEGER"]], "rows": [[1]]}]})
    for sql in ("DELETE FROM t", "DROP TABLE t", "PRAGMA query_only = 0"):
        with pytest.raises(Exception, match="read-only"):
            db.run_query(sql)
    assert "INTEGER" in db.run_query("PRAGMA table_info(t)")  # read-only pragmas still work
    assert db.query_rows("SELECT * FROM t") == [(1,)]


def test_runaway_query_times_out_quickly(train_tasks):
    env = make_env(train_tasks[0])
    runaway = "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT COUNT(*) FROM r"
    start = time.monotonic()
    obs, _, _, _, info = env.step(query(runaway))
    elapsed = time.monotonic() - start
    assert info["tool_results"][0].error == "timeout"
    assert "timed out" in obs[0]["content"]
    assert elapsed < 4.0
    obs, _, _, _, info = env.step(query("SELECT 1 + 1 AS two"))  # the connection still works
    assert info["tool_errors"] == 0 and "2" in obs[0]["content"]


def test_short_time_limit_and_cross_join():
    rows = [[i] for i in range(200)]
    db = SQLDatabase({"tables": [{"name": "t", "columns": [["x", "INTEGER"]], "rows": rows}]}, time_limit_s=0.2)
    start = time.monotonic()
    with pytest.raises(Exception, match="stopped after 0.2 s"):
        db.run_query("SELECT COUNT(*) FROM t a, t b, t c, t d")
    assert time.monotonic() - start < 1.5


def test_row_cap():
    rows = [[i, f"name {i}"] for i in range(1, 121)]
    db = SQLDatabase({"tables": [{"name": "t", "columns": [["id", "INTEGER"], ["name", "TEXT"]], "rows": rows}]})
    out = db.run_query("SELECT id FROM t ORDER BY id").splitlines()
    assert out[0].strip() == "id"
    assert [line.strip() for line in out[2:-1]] == [str(i) for i in range(1, 51)]
    assert out[-1] == "... 70 more rows (showing the first 50)"
    assert db.run_query("SELECT id FROM t WHERE id <= 3").splitlines()[-1] == "(3 rows)"
    assert "(0 rows)" in db.run_query("SELECT id FROM t WHERE id < 0")
    wide = db.run_query("SELECT name, name, name, name, name, name FROM t")
    assert len(wide) < 2000 and "more rows" in wide.splitlines()[-1]


def test_errors_come_back_as_tool_messages(train_tasks):
    env = make_env(train_tasks[0])
    bad_turns = {
        "<tool_call>{not json}</tool_call>": "parse",
        '<tool_call>{"name": "drop_database", "arguments": {}}</tool_call>': "unknown_tool",
        call("run_query", sql=42): "bad_arguments",
        call("run_query"): "bad_arguments",
        call("describe_table", table="nope"): "tool_error",
        query("SELEC name FROM customers"): "tool_error",
        query("SELECT * FROM no_such_table"): "tool_error",
        query("SELECT 1; SELECT 2"): "tool_error",
        query("SELECT ?"): "tool_error",
        query(""): "tool_error",
        query("SELECT " + "1 + " * 20000 + "1"): "tool_error",
    }
    for action, kind in bad_turns.items():
        obs, reward, terminated, truncated, info = env.step(action)
        assert [r.error for r in info["tool_results"]] == [kind], action[:80]
        assert obs[0]["content"].startswith("Error:")
        assert info["oracle_ok"] is False and not terminated
    obs, *_ = env.step(call("describe_table", table="nope"))
    assert "Tables:" in obs[0]["content"]


def test_envs_step_in_parallel_threads(train_tasks):
    """Each env owns its connection; envs made in one thread can be stepped from others."""
    envs = [gymnasium.make("agentopd/SQL-v0", split="train") for _ in range(4)]

    def work(k: int) -> list[bool]:
        env, base, ok = envs[k], envs[k].unwrapped, []
        for task in train_tasks[k::4][:15]:
            env.reset(options={"task": task.id})
            terminated = False
            while not terminated:
                _, _, terminated, _, info = env.step(base.oracle_action())
            ok.append(info["success"])
        return ok

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(work, range(4)))
    assert all(all(ok) and len(ok) == 15 for ok in results)


# ---- the oracle and the verifier -----------------------------------------------------------
@pytest.mark.parametrize("split", ["train", "test"])
def test_oracle_solves_every_task(split):
    env = gymnasium.make("agentopd/SQL-v0", split=split)
    base = env.unwrapped
    for task in base.tasks:
        env.reset(options={"task": task.id})
        turns, terminated, truncated = 0, False, False
        while not (terminated or truncated):
            obs, reward, terminated, truncated, info = env.step(base.oracle_action())
            turns += 1
            assert info["oracle_ok"] is True, (task.id, info["oracle_action"], obs)
            assert info["tool_errors"] == 0
        assert info["success"] is True, task.id
        assert not truncated
        assert 2 <= turns <= 8, task.id
        assert turns == {1: 2, 2: 3}.get(task.difficulty, turns)


def test_oracle_recovers_from_a_wrong_query(train_tasks):
    task = next(t for t in train_tasks if t.difficulty == 2 and t.data["answers"][0]["kind"] == "number")
    env = make_env(task)
    base = env.unwrapped
    table = task.data["describe"][0][0]
    obs, _, _, _, info = env.step(query(f"SELECT COUNT(*) + 1000 FROM {table}"))
    assert info["tool_errors"] == 0 and info["oracle_ok"] is False
    obs, _, _, _, info = env.step(query("SELECT nonsense FROM nowhere"))
    assert info["oracle_ok"] is False
    assert base.oracle_action().startswith("<tool_call>")
    terminated, steps = False, 0
    while not terminated:
        obs, reward, terminated, truncated, info = env.step(base.oracle_action())
        steps += 1
        assert info["oracle_ok"] is True
    assert info["success"] is True and steps == 3


def test_skipping_describe_with_the_right_query_is_accepted(train_tasks):
    task = next(t for t in train_tasks if t.difficulty == 2)
    env = make_env(task)
    base = env.unwrapped
    assert "describe_table" in base.oracle_action()
    sql = task.data["queries"][0]
    # a column that is not in the oracle's result (its value may even match by chance): no
    _, _, _, _, info = env.step(query(f"SELECT 'zzz' AS extra, sub.* FROM ({sql}) AS sub"))
    assert info["tool_errors"] == 0 and info["oracle_ok"] is False
    assert "describe_table" in base.oracle_action()
    # the same result from different SQL text, columns reversed: yes
    cols = [c.strip() for c in base.db.run_query(sql).splitlines()[0].split("|")]
    reordered = ", ".join(f'sub."{c}"' for c in reversed(cols))
    obs, _, _, _, info = env.step(query(f"SELECT {reordered} FROM ({sql}) AS sub"))
    assert info["oracle_ok"] is True, obs
    assert base.oracle_action().startswith("Answer:")
    obs, reward, terminated, truncated, info = env.step(base.oracle_action())
    assert terminated and info["success"] is True and reward == 1.0


def test_answer_column_alone_is_accepted(train_tasks):
    task = next(t for t in train_tasks if t.difficulty == 2 and t.data["queries"][0].endswith("LIMIT 1"))
    env = make_env(task)
    sql = task.data["queries"][0]
    first = env.unwrapped.db.run_query(sql).splitlines()[0].split("|")[0].strip()
    _, _, _, _, info = env.step(query(f'SELECT sub."{first}" FROM ({sql}) AS sub'))
    assert info["oracle_ok"] is True
    fresh = make_env(task)
    _, _, _, _, info = fresh.step(query(sql.removesuffix(" LIMIT 1")))  # the whole ranking: no
    assert info["tool_errors"] == 0 and info["oracle_ok"] is False


def test_listing_tables_is_fine_while_exploring(train_tasks):
    env = make_env(next(t for t in train_tasks if t.difficulty == 2))
    _, _, _, _, info = env.step(call("list_tables"))
    assert info["oracle_ok"] is True
    d1 = make_env(next(t for t in train_tasks if t.difficulty == 1))  # schema given: query now
    _, _, _, _, info = d1.step(call("list_tables"))
    assert info["oracle_ok"] is False


def test_follow_up_oracle_after_student_answered_wrong(train_tasks):
    task = next(t for t in train_tasks if t.difficulty == 3 and len(t.requests) == 3)
    env = make_env(task)
    base = env.unwrapped
    obs, reward, terminated, _, info = env.step("Answer: 123456789")  # wrong, without looking
    assert info["request_success"] == [False] and reward == 0.0 and not terminated
    assert obs == [{"role": "user", "content": task.requests[1]}]
    while not terminated:
        obs, reward, terminated, truncated, info = env.step(base.oracle_action())
        assert info["oracle_ok"] is True
    assert info["request_success"] == [False, True, True] and info["success"] is False


def test_verifier(train_tasks):
    names_task = next(
        t for t in train_tasks if t.data["answers"][0]["kind"] == "names" and len(t.data["answers"][0]["items"]) >= 2
    )
    number_task = next(
        t for t in train_tasks if t.data["answers"][0]["kind"] == "number" and isinstance(t.data["answers"][0]["value"], float)
    )
    env = SQLEnv(tasks=[names_task, number_task])
    env.reset(options={"task": names_task.id})
    want = names_task.data["answers"][0]
    items, other = want["items"], want["exclude"][0]
    assert env._check_request(0, "Answer: " + ", ".join(items))
    assert env._check_request(0, "The names are below.\nAnswer: " + " and ".join(x.upper() for x in reversed(items)))
    assert not env._check_request(0, "Answer: " + ", ".join(items[:-1]))
    assert not env._check_request(0, "Answer: " + ", ".join([*items, other]))
    assert not env._check_request(0, "Answer: " + ", ".join([items[0][:-1], *items[1:]]))  # partial word
    env.reset(options={"task": number_task.id})
    value = number_task.data["answers"][0]["value"]
    assert env._check_request(0, f"Answer: {value}")
    assert env._check_request(0, f"It is about {value + 5}. Answer: {value:,.2f}")
    assert not env._check_request(0, f"Answer: {value + 1}")
    assert not env._check_request(0, "Answer: I could not find it")


def test_skill_card(train_tasks):
    env = make_env(next(t for t in train_tasks if t.difficulty == 3))
    card = env.unwrapped.skill_card()
    assert set(card) == {"success_analysis", "mistake_analysis", "golden_workflow"}
    assert card["golden_workflow"][0].startswith("describe_table(")
    assert sum(step.startswith("Answer:") for step in card["golden_workflow"]) == len(env.unwrapped.task.requests)


# ---- the suite -----------------------------------------------------------------------------
def test_suite_is_deterministic_and_matches_the_generator():
    for split in ("train", "test"):
        rows = gen.generate(split)
        assert len(rows) == gen.COUNTS[split]
        on_disk = [json.loads(line) for line in suite_path("sql", split).read_text().splitlines()]
        assert json.loads(json.dumps(rows)) == on_disk


def test_suite_shape(train_tasks):
    test_tasks = load_tasks("sql", "test")
    assert {t.requests for t in test_tasks}.isdisjoint({t.requests for t in train_tasks})
    for task in (*train_tasks, *test_tasks):
        assert task.family == "sql" and task.difficulty in (1, 2, 3)
        n = len(task.requests)
        assert (n == 1) if task.difficulty < 3 else (n in (2, 3))
        assert len(task.data["queries"]) == len(task.data["answers"]) == len(task.data["describe"]) == n
        assert (task.data["describe"][0] == []) == (task.difficulty == 1)
        assert all(2 <= len(t["rows"]) <= 60 for t in task.data["db"]["tables"])


def test_episodes_are_deterministic(train_tasks):
    task = next(t for t in train_tasks if t.difficulty == 3)

    def play():
        env = make_env(task)
        out = [env.unwrapped.history]
        for action in (query("SELECT * FROM " + task.data["describe"][0][0]), "Answer: 3"):
            out.append(env.step(action)[0])
        terminated = False
        while not terminated:
            obs, _, terminated, _, _ = env.step(env.unwrapped.oracle_action())
            out.append(obs)
        return out

    assert play() == play()

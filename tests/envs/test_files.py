"""The files family: VFS semantics and guards, env error handling, oracle and verifier."""

from __future__ import annotations

import json
import random
from pathlib import Path

import gymnasium as gym
import pytest

import agentopd  # noqa: F401  (registers the envs)
from agentopd.envs.files import FilesEnv, answer_ok, next_op
from agentopd.envs.suites import load_tasks
from agentopd.tools.core import ToolFailure, ToolSet, format_tool_call, parse_tool_calls
from agentopd.tools.vfs import MAX_FILE_CHARS, MAX_GREP_MATCHES, MAX_LS_ENTRIES, VFS

ROOT = Path(__file__).resolve().parents[2]


def small_vfs() -> VFS:
    return VFS(
        {
            "/notes/todo.txt": "buy milk\ncall Ana\n",
            "/notes/ideas.txt": "a garden\n",
            "/logs/app.log": "INFO start\nERROR disk\nINFO ok\nERROR net\n",
        },
        dirs=["/empty"],
    )


# ---- VFS semantics ---------------------------------------------------------------------------
def test_paths_relative_absolute_and_dotdot():
    v = small_vfs()
    assert v.pwd() == "/"
    assert v.ls() == "empty/\nlogs/\nnotes/"
    assert v.cd("notes") == "/notes"
    assert v.cat("todo.txt") == v.cat("/notes/todo.txt") == v.cat("./../notes//todo.txt")
    assert v.cd("..") == "/" and v.cd("..") == "/"  # .. at the root stays there
    assert v.resolve("/a/./b/../c/") == "/a/c"
    v.cd("/logs")
    assert v.ls("../notes") == "ideas.txt\ntodo.txt"
    assert v.ls("/empty") == "(empty directory)"
    assert v.ls("/notes/todo.txt") == "/notes/todo.txt"


def test_mutations():
    v = small_vfs()
    assert v.mkdir("/a/b/c") == "Created directory /a/b/c"  # parents too
    assert "already exists" in v.mkdir("/a/b")
    v.mv("/notes/todo.txt", "/a")  # into an existing directory
    assert v.cat("/a/todo.txt").startswith("buy milk")
    v.mv("/a/todo.txt", "/a/list.txt")  # rename
    v.cp("/a/list.txt", "/notes/")
    assert v.cat("/notes/list.txt") == v.cat("/a/list.txt")
    v.write_file("/notes/list.txt", "x\n", append=True)
    assert v.cat("/notes/list.txt").endswith("call Ana\nx\n")
    v.write_file("/notes/list.txt", "new\n")
    assert v.cat("/notes/list.txt") == "new\n"
    v.cp("/notes", "/backup")  # directories copy recursively
    assert v.cat("/backup/ideas.txt") == "a garden\n"
    v.cd("/a/b")
    v.mv("/a", "/z")  # the working directory follows its directory
    assert v.pwd() == "/z/b"
    v.rm("/z")
    assert v.pwd() == "/"
    assert "/z" not in v.snapshot()


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda v: v.cat("/nope.txt"), "cat: /nope.txt: No such file or directory"),
        (lambda v: v.cat("/notes"), "cat: /notes: Is a directory"),
        (lambda v: v.cd("/notes/todo.txt"), "cd: /notes/todo.txt: Not a directory"),
        (lambda v: v.cat("/notes/todo.txt/x"), "Not a directory"),
        (lambda v: v.ls("/missing"), "No such file or directory"),
        (lambda v: v.mkdir("/notes/todo.txt"), "File exists"),
        (lambda v: v.mkdir("/notes/todo.txt/sub"), "Not a directory"),
        (lambda v: v.mv("/notes", "/notes/sub"), "subdirectory of itself"),
        (lambda v: v.mv("/notes/todo.txt", "/notes/todo.txt"), "same file"),
        (lambda v: v.mv("/notes/todo.txt", "/nodir/"), "Not a directory"),
        (lambda v: v.mv("/notes/todo.txt", "/nodir/x.txt"), "No such file or directory"),
        (lambda v: v.mv("/ghost", "/x"), "No such file or directory"),
        (lambda v: v.mv("/empty", "/notes/todo.txt"), "cannot overwrite non-directory"),
        (lambda v: v.cp("/notes", "/notes/inner"), "subdirectory of itself"),
        (lambda v: v.rm("/"), "refusing to remove '/'"),
        (lambda v: v.rm("/ghost"), "No such file or directory"),
        (lambda v: v.write_file("/nodir/a.txt", "x"), "No such file or directory"),
        (lambda v: v.write_file("/notes", "x"), "Is a directory"),
        (lambda v: v.grep("", "/"), "empty pattern"),
        (lambda v: v.cd(""), "missing file operand"),
    ],
)
def test_agent_mistakes_raise_tool_failure(call, message):
    v = small_vfs()
    before = v.snapshot()
    with pytest.raises(ToolFailure, match=message.replace("'", ".").replace("/", ".")):
        call(v)
    assert v.snapshot() == before  # a failed call changes nothing


def test_grep_plain_text_with_file_names():
    v = small_vfs()
    assert v.grep("ERROR", "/logs/app.log") == "/logs/app.log:2:ERROR disk\n/logs/app.log:4:ERROR net\n2 matching lines"
    assert v.grep("ERROR", "/") == v.grep("ERROR", "/logs")  # recursive over directories
    assert v.grep("a.*", "/") == "no matches"  # not a regex
    assert v.grep("(a+)+$", "/notes") == "no matches"


def test_guards_bound_sizes():
    v = small_vfs()
    with pytest.raises(ToolFailure, match="longer than"):
        v.write_file("/big.txt", "x" * (MAX_FILE_CHARS + 1))
    v.write_file("/big.txt", "x" * MAX_FILE_CHARS)
    with pytest.raises(ToolFailure, match="exceed"):
        v.write_file("/big.txt", "y", append=True)
    with pytest.raises(ToolFailure, match="path longer"):
        v.cat("/" + "a" * 600)
    with pytest.raises(ToolFailure, match="deeper"):
        v.mkdir("/" + "/".join(["d"] * 30))
    with pytest.raises(ToolFailure, match="file system full"):
        for i in range(40):
            v.cp("/big.txt", f"/copy{i}.txt")
    w = VFS({f"/many/f{i}.txt": f"hit {i}\n" for i in range(300)})
    out = w.ls("/many").splitlines()
    assert len(out) == MAX_LS_ENTRIES + 1 and out[-1].startswith("... and 100 more")
    g = w.grep("hit", "/many").splitlines()
    assert len(g) == MAX_GREP_MATCHES + 2 and g[-1] == "300 matching lines"


def test_tool_schemas_from_bound_methods():
    ts = ToolSet(small_vfs().tools())
    names = [s["function"]["name"] for s in ts.schemas]
    assert names == ["ls", "cd", "pwd", "cat", "grep", "mkdir", "write_file", "mv", "cp", "rm"]
    for s in ts.schemas:
        assert s["function"]["description"]
        for prop in s["function"]["parameters"]["properties"].values():
            assert prop.get("description")
    wf = next(s for s in ts.schemas if s["function"]["name"] == "write_file")["function"]["parameters"]
    assert wf["required"] == ["path", "content"] and wf["properties"]["append"]["type"] == "boolean"


# ---- env: errors come back as tool messages ---------------------------------------------------
@pytest.fixture(scope="module")
def train_tasks():
    return load_tasks("files", "train")


def _task(tasks, template):
    return next(t for t in tasks if t.data["template"] == template)


def test_tool_errors_become_messages(train_tasks):
    env = gym.make("agentopd/Files-v0", split="train")
    env.reset(options={"task": 0})
    bad = [
        format_tool_call("cat", {"path": "/no/such/file"}),
        format_tool_call("teleport", {"path": "/"}),
        '<tool_call>{"name": "ls", "arguments": {"path": </tool_call>',
        format_tool_call("cat", {"path": 7}),
        format_tool_call("mv", {"src": "/"}),
        format_tool_call("rm", {"path": "/"}),
        format_tool_call("write_file", {"path": "/x.txt", "content": "z" * (MAX_FILE_CHARS + 5)}),
        "<tool_call>" + json.dumps({"name": "ls", "arguments": {"path": "/" + "a/" * 400}}),
    ]
    for action in bad:
        obs, reward, term, trunc, info = env.step(action)
        assert not term and reward == 0.0
        assert info["tool_errors"] == 1 and info["oracle_ok"] is False
        assert obs[0]["role"] == "tool" and obs[0]["content"].startswith("Error:")
    kinds = [r.error for r in info["tool_results"]]
    assert kinds == ["parse"]
    env.close()


# ---- oracle solves every task -----------------------------------------------------------------
@pytest.mark.parametrize("split", ["train", "test"])
def test_oracle_solves_every_task(split):
    env = gym.make("agentopd/Files-v0", split=split)
    tasks = load_tasks("files", split)
    assert len(tasks) == {"train": 300, "test": 100}[split]
    for task in tasks:
        env.reset(options={"task": task.id})
        turns = 0
        while True:
            obs, reward, term, trunc, info = env.step(env.unwrapped.oracle_action())
            turns += 1
            assert info["oracle_ok"], (task.id, turns, info["oracle_action"])
            assert info["tool_errors"] == 0, (task.id, obs)
            if term or trunc:
                break
        assert term and info["success"], (task.id, info["request_success"])
        assert 2 <= turns <= 8, (task.id, turns)
    env.close()


def test_suite_shape():
    train, test = load_tasks("files", "train"), load_tasks("files", "test")
    assert {t.difficulty for t in train} == {1, 2, 3} == {t.difficulty for t in test}
    for t in train + test:
        assert t.family == "files" and t.id.startswith(f"files-v1-{t.split}-")
        assert len(t.data["goals"]) == len(t.requests)
        assert (len(t.requests) > 1) == (t.difficulty == 3)

    def key(t):
        return json.dumps([t.requests, t.data["files"], t.data["dirs"]], sort_keys=True)

    assert not {key(t) for t in test} & {key(t) for t in train}
    assert len({key(t) for t in train}) == len(train)


# ---- oracle from off-golden-path states -------------------------------------------------------
def _run_oracle(env, max_turns=40):
    for _ in range(max_turns):
        obs, reward, term, trunc, info = env.step(env.oracle_action())
        assert info["oracle_ok"], info["oracle_action"]
        if term:
            return info
    raise AssertionError("oracle did not finish")


def test_oracle_recovers_after_unrelated_and_harmful_moves(train_tasks):
    task = _task(train_tasks, "t_find_move")
    env = FilesEnv(tasks=[task])
    env.reset(options={"task": task.id})
    f = task.data["goals"][0]["ops"][-1]["arguments"]["src"]  # the mail to move
    other = next(p for p in task.data["files"] if p != f and p.startswith("/inbox/"))
    # the student first moves an unrelated file and then the wanted one to a wrong place
    env.step(format_tool_call("mv", {"src": other, "dst": "/stray.txt"}))
    env.step(format_tool_call("cd", {"path": "/inbox"}))
    env.step(format_tool_call("mv", {"src": f.rsplit("/", 1)[1], "dst": "/wrong.txt"}))
    # grepping /inbox would no longer show the mail, so the oracle goes straight to repairs
    assert parse_tool_calls(env.oracle_action())[0].name != "grep"
    info = _run_oracle(env)
    assert info["success"]
    snap = env.vfs.snapshot()
    assert "/stray.txt" not in snap and "/wrong.txt" not in snap and other in snap


def test_oracle_recovers_when_needed_file_was_deleted(train_tasks):
    task = _task(train_tasks, "c_copy_append")
    env = FilesEnv(tasks=[task])
    env.reset(options={"task": task.id})
    env.step(format_tool_call("rm", {"path": "/notes/todo.txt"}))
    info = _run_oracle(env)
    assert info["success"]


def _random_call(rng: random.Random, vfs: VFS) -> str:
    snap = vfs.snapshot()
    files = [p for p, v in snap.items() if v is not None] or ["/x.txt"]
    dirs = ["/"] + [p for p, v in snap.items() if v is None]
    kind = rng.choice(["mv", "mv", "cp", "rm", "mkdir", "write", "append", "cd", "cat"])
    if kind == "mv":
        src = rng.choice(files + dirs[1:] if rng.random() < 0.2 else files)
        dst = rng.choice([rng.choice(dirs), rng.choice(dirs).rstrip("/") + "/moved.txt"])
        return format_tool_call("mv", {"src": src, "dst": dst})
    if kind == "cp":
        return format_tool_call("cp", {"src": rng.choice(files), "dst": rng.choice(dirs).rstrip("/") + "/copy.txt"})
    if kind == "rm":
        return format_tool_call("rm", {"path": rng.choice(files + dirs)})
    if kind == "mkdir":
        return format_tool_call("mkdir", {"path": rng.choice(["/archive", "/finance", "/reports", "/x/y", rng.choice(files)])})
    if kind in ("write", "append"):
        return format_tool_call(
            "write_file", {"path": rng.choice(files), "content": "junk\n", "append": kind == "append"}
        )
    if kind == "cd":
        return format_tool_call("cd", {"path": rng.choice(dirs)})
    return format_tool_call("cat", {"path": rng.choice(files)})


def test_oracle_takes_over_from_random_states(train_tasks):
    rng = random.Random(7)
    tasks = rng.sample(list(train_tasks), 120)
    for task in tasks:
        env = FilesEnv(tasks=[task])
        env.reset(options={"task": task.id})
        done = False
        # a student that makes random (often harmful) calls on some turns, never answering
        for _ in range(rng.randint(1, 6)):
            _, _, done, _, _ = env.step(_random_call(rng, env.vfs))
        for _ in range(rng.randint(0, 3)):  # oracle a little, then random again
            _, _, done, _, _ = env.step(env.oracle_action())
            if done:
                break
        if not done:
            for _ in range(rng.randint(0, 3)):
                _, _, done, _, _ = env.step(_random_call(rng, env.vfs))
        # random calls never answer, so every request is answered by the oracle: all succeed
        info = _run_oracle(env, 60) if not done else {"success": all(env.request_success)}
        assert info["success"], (task.id, env.request_success)


# ---- per-turn checks accept equivalent calls --------------------------------------------------
def test_equivalent_calls_are_oracle_ok(train_tasks):
    task = _task(train_tasks, "t_find_move")
    env = FilesEnv(tasks=[task])
    env.reset(options={"task": task.id})
    grep = parse_tool_calls(env.oracle_action())[0]
    # grep over / covers the oracle's grep over /inbox; relative paths are resolved
    _, _, _, _, info = env.step(format_tool_call("grep", {"pattern": grep.arguments["pattern"], "path": "/"}))
    assert info["oracle_ok"]
    nxt = parse_tool_calls(env.oracle_action())
    if nxt[0].name == "mkdir":
        dest = nxt[0].arguments["path"]
        _, _, _, _, info = env.step(format_tool_call("mkdir", {"path": dest + "/"}))
        assert info["oracle_ok"]
    mv = parse_tool_calls(env.oracle_action())[0]
    assert mv.name == "mv"
    env.step(format_tool_call("cd", {"path": "/inbox"}))
    src = mv.arguments["src"].rsplit("/", 1)[1]
    dest_dir = mv.arguments["dst"].rsplit("/", 1)[0]
    _, _, _, _, info = env.step(format_tool_call("mv", {"src": src, "dst": dest_dir}))
    assert info["oracle_ok"] and info["tool_errors"] == 0
    _, _, term, _, info = env.step("All done.")
    assert term and info["success"]


def test_batched_oracle_turn_accepts_any_subset(train_tasks):
    task = _task(train_tasks, "t_organise")
    env = FilesEnv(tasks=[task])
    env.reset(options={"task": task.id})
    env.step(env.oracle_action())  # ls
    mkdirs = parse_tool_calls(env.oracle_action())
    assert [c.name for c in mkdirs] == ["mkdir", "mkdir"]
    _, _, _, _, info = env.step(format_tool_call("mkdir", {"path": mkdirs[1].arguments["path"]}))
    assert info["oracle_ok"]
    _, _, _, _, info = env.step(format_tool_call("mkdir", {"path": "/unrelated"}))
    assert not info["oracle_ok"]


# ---- verifier -----------------------------------------------------------------------------------
def test_verifier_rejects_wrong_end_states(train_tasks):
    # answering before doing anything
    task = _task(train_tasks, "t_find_move")
    env = FilesEnv(tasks=[task])
    env.reset(options={"task": task.id})
    _, reward, term, _, info = env.step("Done.")
    assert term and not info["success"] and reward == 0.0
    # the right move plus collateral damage
    env.reset(options={"task": task.id})
    while parse_tool_calls(action := env.oracle_action()):
        env.step(action)
    env.step(format_tool_call("write_file", {"path": "/inbox/extra.txt", "content": "hi\n"}))
    _, _, term, _, info = env.step("Done.")
    assert term and not info["success"]
    # moved but renamed, although the name had to be kept
    env.reset(options={"task": task.id})
    while (calls := parse_tool_calls(env.oracle_action()))[0].name != "mv":
        env.step(env.oracle_action())
    src, dst = calls[0].arguments["src"], calls[0].arguments["dst"]
    env.step(format_tool_call("mv", {"src": src, "dst": dst + ".bak"}))
    _, _, term, _, info = env.step("Done.")
    assert term and not info["success"]


def test_verifier_checks_answers(train_tasks):
    task = _task(train_tasks, "t_count_level")
    env = FilesEnv(tasks=[task])
    right = task.data["goals"][0]["answer"]
    env.reset(options={"task": task.id})
    env.step(env.oracle_action())
    _, _, _, _, info = env.step(f"Answer: {right + 1}")
    assert not info["success"]
    env.reset(options={"task": task.id})
    _, _, _, _, info = env.step(f"There are {right} such lines.\nAnswer: {right}")
    assert info["success"]


def test_answer_kinds():
    assert answer_ok("number", 3, "I count 3 lines.\nAnswer: 3")
    assert not answer_ok("number", 3, "Answer: 4")
    assert answer_ok("text", "buy milk", "Answer: 'Buy milk'.")
    assert not answer_ok("text", "buy milk", "Answer: buy milk and eggs")
    assert answer_ok("path", "/inbox/mail-1.txt", "Answer: `/inbox/mail-1.txt`")
    assert not answer_ok("path", "/inbox/mail-1.txt", "Answer: mail-1.txt")
    assert answer_ok("name", "mail-1.txt", "Answer: /inbox/mail-1.txt")
    assert answer_ok("names", ["a.txt", "b.txt"], "Answer: b.txt and a.txt")
    assert not answer_ok("names", ["a.txt", "b.txt"], "Answer: a.txt, b.txt, c.txt")


def test_next_op_reaches_any_target():
    rng = random.Random(3)
    for _ in range(200):
        a, b = VFS(), VFS()
        for v in (a, b):
            for _ in range(rng.randint(0, 8)):
                path = "/" + "/".join(rng.choice("abc") for _ in range(rng.randint(1, 3)))
                try:
                    if rng.random() < 0.5:
                        v.mkdir(path)
                    else:
                        v.write_file(path, rng.choice(["x\n", "y\n", "x\ny\n", ""]))
                except ToolFailure:
                    pass
        target = b.snapshot()
        for _ in range(50):
            op = next_op(a.snapshot(), target)
            if op is None:
                break
            a.call(*op)
        assert next_op(a.snapshot(), target) is None


# ---- determinism, skill card --------------------------------------------------------------------
def test_generator_is_deterministic_and_matches_released_files():
    import importlib.util

    spec = importlib.util.spec_from_file_location("files_gen", ROOT / "tasks/files/generate.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    test_rows = gen.generate("test")
    assert test_rows == gen.generate("test")
    on_disk = [json.loads(line) for line in (ROOT / "tasks/files/v1/test.jsonl").read_text().splitlines()]
    assert json.loads(json.dumps(test_rows)) == on_disk


def test_same_seed_same_task_and_transcript():
    def run(seed):
        env = gym.make("agentopd/Files-v0", split="test")
        obs, info = env.reset(seed=seed)
        msgs = list(obs)
        while True:
            obs, _, term, trunc, _ = env.step(env.unwrapped.oracle_action())
            msgs += obs
            if term or trunc:
                return info["task_id"], msgs, env.unwrapped.history

    a, b = run(11), run(11)
    assert a == b
    assert {run(s)[0] for s in range(6)} != {a[0]}  # seeds do pick different tasks


def test_skill_card(train_tasks):
    task = _task(train_tasks, "c_inbox")
    env = FilesEnv(tasks=[task])
    env.reset(options={"task": task.id})
    card = env.skill_card()
    assert set(card) == {"success_analysis", "mistake_analysis", "golden_workflow"}
    wf = card["golden_workflow"]
    assert wf[0].startswith("grep(") and wf[1].startswith("Answer: mail-")
    assert sum(s.startswith("mv(") for s in wf) == 2

"""Files: manage an in-memory file system (ls, cd, pwd, cat, grep, mkdir, write_file, mv, cp, rm).

A task gives the initial tree (``files``: path -> text, ``dirs``: directories, ``cwd``) and, per
user request, a goal (``goals[i]``): the golden mutating calls ``ops`` (which define the target
tree of request i, applied cumulatively from the initial tree), the read calls ``reads`` an
expert makes to learn what it needs, and for questions an ``answer`` with its ``answer_kind``
(number | text | path | name | names).

Verifier: after request i, the whole tree (paths, types and file texts, up to trailing
whitespace and blank lines at the ends) must equal target i, and a question's answer must match.
The working directory is not checked.

Oracle, from any state: (1) the first read of the request whose evidence (its output on the
request's starting tree) has not yet been seen in a tool result of this request, if running it
now still shows that evidence; (2) otherwise the next calls of a tree-diff plan that turns the
current tree into the target (create missing directories, fix files preferring ``mv`` from
misplaced files, then ``cp``, append or ``write_file``, then delete extras), batching consecutive
calls of one tool; (3) once the tree matches: ``Answer: <answer>`` or ``Done.``.
"""

from __future__ import annotations

import json
import re
from typing import Any

from agentopd.envs.base import ToolEnv, last_number, numbers_match
from agentopd.tools.core import (
    MAX_OUTPUT_CHARS,
    ToolCall,
    ToolFailure,
)
from agentopd.tools.vfs import READ_TOOLS, TOOL_NAMES, VFS

MAX_BATCH = 6
"""At most this many calls of one tool in one oracle turn."""

Tree = dict[str, "str | None"]
_GREP_COUNT = re.compile(r"^\d+ matching lines?$")


def lines_of(text: str) -> list[str]:
    """A file's lines, trailing spaces dropped, without blank lines at either end."""
    out = [ln.rstrip() for ln in text.splitlines()]
    while out and not out[0]:
        out.pop(0)
    while out and not out[-1]:
        out.pop()
    return out


def same_text(a: str | None, b: str | None) -> bool:
    if a is None or b is None:
        return a is b
    return lines_of(a) == lines_of(b)


def same_tree(a: Tree, b: Tree) -> bool:
    return a.keys() == b.keys() and all(same_text(a[k], b[k]) for k in a)


def evidence_lines(output: str) -> list[str]:
    """What a read call showed, as the set of lines that must reappear for it to count as seen."""
    if len(output) > MAX_OUTPUT_CHARS:  # the agent only sees the first part
        output = output[:MAX_OUTPUT_CHARS].rsplit("\n", 1)[0]
    lines = [ln for ln in output.splitlines() if ln.strip() and not _GREP_COUNT.match(ln)]
    return lines or [output.strip()]


def _parent(path: str) -> str:
    return path.rsplit("/", 1)[0] or "/"


def _base(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def _ancestors(path: str) -> list[str]:
    """'/a/b/c' -> ['/a', '/a/b', '/a/b/c']."""
    parts = path.strip("/").split("/")
    return ["/" + "/".join(parts[: i + 1]) for i in range(len(parts))]


def next_op(cur: Tree, target: Tree) -> tuple[str, dict[str, Any]] | None:
    """One call that brings tree `cur` strictly closer to `target`, or None when they match."""
    # 1. directories the target has and the current tree lacks
    missing = sorted(d for d, v in target.items() if v is None and not (d in cur and cur[d] is None))
    for d in missing:
        for a in _ancestors(d):
            if a in cur and cur[a] is not None:  # a file is in the way
                for p in sorted(target):
                    if (
                        target[p] is not None
                        and same_text(cur[a], target[p])
                        and not same_text(cur.get(p), target[p])
                        and (_parent(p) == "/" or (_parent(p) in cur and cur[_parent(p)] is None))
                        and not (p in cur and cur[p] is None)
                        and not p.startswith(a + "/")
                    ):
                        return "mv", {"src": a, "dst": p}
                return "rm", {"path": a}
    leaves = [d for d in missing if not any(m.startswith(d + "/") for m in missing)]
    if leaves:
        return "mkdir", {"path": leaves[0]}
    # 2. files that are missing or have the wrong text
    for p in sorted(target):
        want = target[p]
        if want is None or (p in cur and same_text(cur[p], want)):
            continue
        if p in cur and cur[p] is None:
            return "rm", {"path": p}  # a directory where a file belongs
        have = cur.get(p)
        if have is not None and lines_of(have):
            hl, wl = lines_of(have), lines_of(want)
            if len(wl) > len(hl) and wl[: len(hl)] == hl:
                sep = "" if have.endswith("\n") else "\n"
                return "write_file", {"path": p, "content": sep + "\n".join(wl[len(hl):]) + "\n", "append": True}
        same = [q for q, v in cur.items() if v is not None and q != p and same_text(v, want)]
        misplaced = [q for q in same if not (q in target and same_text(target[q], cur[q]))]
        if misplaced:
            misplaced.sort(key=lambda q: (_base(q) != _base(p), q))
            return "mv", {"src": misplaced[0], "dst": p}
        if same:
            same.sort(key=lambda q: (_base(q) != _base(p), q))
            return "cp", {"src": same[0], "dst": p}
        return "write_file", {"path": p, "content": want}
    # 3. entries the target does not have (shallowest first: rm removes whole subtrees)
    for p in sorted(cur, key=lambda q: (q.count("/"), q)):
        if p not in target:
            return "rm", {"path": p}
    return None


def plan_calls(vfs: VFS, target: Tree, max_batch: int = MAX_BATCH) -> list[tuple[str, dict[str, Any]]]:
    """The next calls towards `target`: consecutive calls of the first call's tool."""
    sim = vfs.copy()
    calls: list[tuple[str, dict[str, Any]]] = []
    while len(calls) < max_batch:
        op = next_op(sim.snapshot(), target)
        if op is None or (calls and op[0] != calls[0][0]):
            break
        sim.call(*op)
        calls.append(op)
    return calls


# ---- answers -------------------------------------------------------------------------------
def _answer_text(text: str) -> str:
    m = list(re.finditer(r"answer\s*:", text, flags=re.IGNORECASE))
    if m:
        text = text[m[-1].end() :]
    else:
        lines = [ln for ln in text.strip().splitlines() if ln.strip()]
        text = lines[-1] if lines else ""
    return text.strip()


def _clean(s: str) -> str:
    s = s.strip().strip("`'\"*").strip()
    s = s.rstrip(".").strip().strip("`'\"*").strip()
    return " ".join(s.split())


def answer_ok(kind: str, expected: Any, text: str) -> bool:
    """Whether assistant `text` gives the expected answer."""
    if kind == "number":
        return numbers_match(last_number(text), float(expected))
    got = _clean(_answer_text(text))
    if kind == "text":
        return got.casefold() == _clean(str(expected)).casefold()
    if kind == "path":
        return got.rstrip("/") == str(expected).rstrip("/")
    if kind == "name":
        return _base(got.rstrip("/")) == str(expected)
    if kind == "names":
        items = re.split(r",|\n|\s+and\s+", got)
        names = {_base(_clean(x).rstrip("/")) for x in items if _clean(x)}
        return names == set(expected)
    raise ValueError(f"unknown answer kind {kind!r}")


def _show_call(name: str, arguments: dict[str, Any]) -> str:
    order = ["pattern", "path", "src", "dst", "content", "append"]
    args = ", ".join(f"{k}={json.dumps(arguments[k])}" for k in sorted(arguments, key=order.index))
    return f"{name}({args})"


class FilesEnv(ToolEnv):
    family = "files"
    instructions = (
        "You are a careful assistant that manages files in a virtual file system using the "
        "tools below. Paths are absolute (like /notes/todo.txt) or relative to the current "
        "directory, which starts at /. Look before you act: list directories, search with grep "
        "and read files instead of guessing names or contents."
    )
    answer_format = (
        "When a request is done, reply briefly without any tool call. If the user asked a "
        "question, end that reply with: Answer: <answer>"
    )
    example = """
user: How many lines does /notes/todo.txt have?
assistant: <tool_call>{"name": "cat", "arguments": {"path": "/notes/todo.txt"}}</tool_call>
tool: buy milk
call mom
assistant: The file has two lines. Answer: 2
"""

    # ---- state ----------------------------------------------------------------------------
    def _init_state(self, task) -> None:
        d = task.data
        self.goals: list[dict[str, Any]] = d["goals"]
        if len(self.goals) != len(task.requests):
            raise ValueError(f"{task.id}: {len(task.requests)} requests but {len(self.goals)} goals")
        self.vfs = VFS(d["files"], d.get("dirs", []), d.get("cwd", "/"))
        self._initial = self.vfs.copy()
        self.targets: list[Tree] = []
        self.evidence: list[list[list[str]]] = []
        sim = self.vfs.copy()
        try:
            for goal in self.goals:
                self.evidence.append(
                    [evidence_lines(sim.call(c["name"], c["arguments"])) for c in goal.get("reads", [])]
                )
                for c in goal.get("ops", []):
                    sim.call(c["name"], c["arguments"])
                self.targets.append(sim.snapshot())
        except ToolFailure as e:
            raise ValueError(f"{task.id}: malformed task, its golden calls fail: {e}") from e
        self._pre: VFS | None = None
        self._plan: list[ToolCall] = []

    def _tools(self):
        return self.vfs.tools()

    def _before_turn(self, expected: str) -> None:
        # remembered for _same_call: the state and plan before this turn's calls ran
        self._pre = self.vfs.copy()
        self._plan = self.tool_format.parse(expected)

    # ---- verifier -------------------------------------------------------------------------
    def _check_request(self, index: int, answer: str) -> bool:
        if not same_tree(self.vfs.snapshot(), self.targets[index]):
            return False
        goal = self.goals[index]
        if goal.get("answer") is None:
            return True
        return answer_ok(goal["answer_kind"], goal["answer"], answer)

    # ---- oracle ---------------------------------------------------------------------------
    def _seen(self, call: dict[str, Any], evidence: list[str]) -> bool:
        want = set(evidence)
        for c, r in self.log.ok_results():
            if c.name == call["name"] and (
                want <= set(r.content.splitlines())
                or json.dumps(c.arguments, sort_keys=True) == json.dumps(call["arguments"], sort_keys=True)
            ):
                return True
        return False

    def oracle_action(self) -> str:
        i = min(self.request_index, len(self.goals) - 1)
        goal = self.goals[i]
        for call, ev in zip(goal.get("reads", []), self.evidence[i]):
            if self._seen(call, ev):
                continue
            try:
                now = evidence_lines(self.vfs.copy().call(call["name"], call["arguments"]))
            except ToolFailure:
                continue
            if set(ev) <= set(now):  # still informative in this state
                return self._format(call["name"], call["arguments"])
        calls = plan_calls(self.vfs, self.targets[i])
        if calls:
            return "\n".join(self._format(n, a) for n, a in calls)
        if goal.get("answer") is not None:
            return f"Answer: {goal['answer'] if goal['answer_kind'] != 'names' else ', '.join(goal['answer'])}"
        return "Done."

    def _format(self, name: str, arguments: dict[str, Any]) -> str:
        """A tool call with its arguments in the order of the tool's signature."""
        order = list(self.toolset.tools[name].schema["function"]["parameters"]["properties"])
        return self.format_call(name, {k: arguments[k] for k in sorted(arguments, key=order.index)})

    def _same_call(self, student: ToolCall, expert: ToolCall) -> bool:
        if student.name != expert.name:
            return False
        if super()._same_call(student, expert):
            return True
        pre = self._pre
        if pre is None:
            return False
        s, e = student.arguments, expert.arguments
        try:
            if expert.name == "pwd":
                return True
            if expert.name in ("ls", "cat", "cd"):
                key = "path"
                return pre.resolve(s.get(key) or ".") == pre.resolve(e.get(key) or ".")
            if expert.name == "grep":
                sp, ep = pre.resolve(s.get("path", "")), pre.resolve(e["path"])
                under = sp == "/" or ep == sp or ep.startswith(sp + "/")
                return s.get("pattern") == e["pattern"] and under
        except ToolFailure:
            return False
        if expert.name in READ_TOOLS or expert.name not in TOOL_NAMES:
            return False
        # a mutating call: same resulting tree as the expert's, from the state the plan had
        # reached just before that expert call
        state = pre.copy()
        for c in self._plan:
            if c == expert:
                break
            try:
                state.call(c.name, c.arguments)
            except (ToolFailure, TypeError):
                return False
        a, b = state.copy(), state.copy()
        try:
            a.call(student.name, dict(s))
            b.call(expert.name, dict(e))
        except (ToolFailure, TypeError):
            return False
        return same_tree(a.snapshot(), b.snapshot())

    # ---- skill card -----------------------------------------------------------------------
    def golden_workflow(self) -> list[str]:
        """The oracle's path from the task's initial state, as readable steps."""
        sim = self._initial.copy()
        steps: list[str] = []
        for i, goal in enumerate(self.goals):
            steps += [_show_call(c["name"], c["arguments"]) for c in goal.get("reads", [])]
            while (op := next_op(sim.snapshot(), self.targets[i])) is not None:
                sim.call(*op)
                steps.append(_show_call(*op))
            if goal.get("answer") is not None:
                ans = goal["answer"]
                steps.append(f"Answer: {', '.join(ans) if isinstance(ans, list) else ans}")
            else:
                steps.append("Reply that the request is done (no tool call).")
        return steps

    def skill_card(self) -> dict[str, Any]:
        return {
            "success_analysis": "Solved tasks first look (ls the directory, grep for the quoted "
            "text, cat the file), then act with exact absolute paths: mkdir before moving into a "
            "new folder, mv/cp keeping the file name when asked, write_file with one line per "
            "newline; they finish each request with a short reply without tool calls, and for "
            "questions end with 'Answer: <answer>' copied exactly from the tool output.",
            "mistake_analysis": "Common failures: guessing file names instead of listing or "
            "grepping; moving a file into a folder that does not exist yet (mkdir first); "
            "renaming by mistake when a trailing folder name was meant; touching files the user "
            "did not mention; miscounting lines (count the grep matches or the lines of cat); "
            "answering with extra words after 'Answer:'; forgetting that a follow-up request "
            "refers to the file from the previous one.",
            "golden_workflow": self.golden_workflow(),
        }

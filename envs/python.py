"""Python: data tasks (statistics, word counts, table filters, strings, primes) solved by running
code in the sandboxed ``python`` tool (`agentopd.tools.python_sandbox`).

Each request carries its data in full; every tool call starts a fresh interpreter. A task stores,
per request, the oracle's code steps (``code``), what each printed (``outputs``), the expected
answer and its kind (``int``: exact integer, ``float``: rounded number, ``text``, ``list``:
comma-separated). The oracle finds the furthest step whose result the agent already has in this
request (a call running that step's exact code, or any successful call whose output shows the
step's value) and issues the next step, or answers once the last one is in hand; so it acts
correctly from any state.
"""

from __future__ import annotations

import re
from typing import Any

from agentopd.core.types import Task, ToolCall, ToolResult
from agentopd.envs.base import ToolEnv, numbers_match
from agentopd.tools.formats import ToolCallFormat
from agentopd.tools.python_sandbox import make_python_tool

_NUM = r"-?\d[\d,]*(?:\.\d+)?(?:[eE][-+]?\d+)?|-?\.\d+"


class PythonEnv(ToolEnv):
    family = "python"
    instructions = (
        "You are a careful data analyst. Solve each request by writing and running Python code "
        "with the python tool instead of working it out in your head. Every call starts a fresh "
        "interpreter: put the data from the request into the code and print the result."
    )
    answer_format = "Give your final answer as: Answer: <answer>"
    example = """
user: What is the sum of the squares of 3, 4 and 12?
assistant: <tool_call>{"name": "python", "arguments": {"code": "print(sum(x * x for x in [3, 4, 12]))"}}</tool_call>
tool: 169
assistant: Answer: 169
"""

    def __init__(
        self,
        split: str = "train",
        tasks=None,
        version: int = 1,
        render_mode: str | None = None,
        timeout_s: float = 10.0,
        tool_format: str | ToolCallFormat = "hermes",
    ):
        super().__init__(split=split, tasks=tasks, version=version, render_mode=render_mode,
                         tool_format=tool_format)
        self.python = make_python_tool(timeout_s=timeout_s)

    def _init_state(self, task: Task) -> None:
        self.steps: list[list[str]] = task.data["code"]
        self.outputs: list[list[str]] = task.data["outputs"]
        self.answers: list[str] = task.data["answers"]
        self.kinds: list[str] = task.data["kinds"]

    def _tools(self):
        return [self.python]

    def _check_request(self, index: int, answer: str) -> bool:
        return answer_matches(answer, self.answers[index], self.kinds[index])

    # ---- oracle -------------------------------------------------------------------------
    def _step_shown(self, call: ToolCall, result: ToolResult) -> int:
        """The last step of the current request this successful call obtained, or -1."""
        steps, outs = self.steps[self.request_index], self.outputs[self.request_index]
        code = call.arguments.get("code")
        if code in steps:  # the oracle's own code: exactly that step (no coincidental matches)
            return steps.index(code)
        return max((k for k, out in enumerate(outs) if shows(result.content, out)), default=-1)

    def _progress(self) -> int:
        """How many leading steps of the current request are done (the furthest one counts)."""
        return 1 + max((self._step_shown(c, r) for c, r in self.log.ok_results("python")), default=-1)

    def oracle_action(self) -> str:
        i = self.request_index
        done = self._progress()
        if done < len(self.steps[i]):
            return self.format_call("python", {"code": self.steps[i][done]})
        return f"Answer: {self.answers[i]}"

    def _calls_ok(self, calls: list[ToolCall], results: list[ToolResult], expected: str) -> bool:
        """A code turn is right when it runs cleanly and obtains the step the oracle wanted
        (or a later one of the same request), whatever code it used."""
        if any(r.error for r in results):
            return False
        wanted = self.tool_format.parse(expected)
        if not wanted:
            return False  # the oracle would have answered here
        want = self.steps[self.request_index].index(wanted[0].arguments["code"])
        return any(self._step_shown(c, r) >= want for c, r in zip(calls, results))

    def skill_card(self) -> dict[str, Any]:
        d = self.task.data
        workflow = []
        for i, (plan, outs) in enumerate(zip(d["plan"], d["outputs"])):
            workflow += [f"request {i + 1}: python code to {p} (prints {o})" for p, o in zip(plan, outs)]
            workflow.append(f"request {i + 1}: Answer: {d['answers'][i]}")
        return {
            "success_analysis": "Solved tasks copy the request's data into the code exactly, print just "
            "the value asked for (rounded or formatted as requested), run one step per call when a "
            "request has several steps (pasting the previous printed value into the next call), reuse "
            "the previous answer in follow-ups, and reply 'Answer: <value>' copying the printed value.",
            "mistake_analysis": "Common failures: answering from mental arithmetic instead of running "
            "code; retyping the data with a value missing or changed; relying on variables from an "
            "earlier call (each call starts fresh, so this raises NameError); forgetting to print; "
            "rounding differently than asked; counting words without lowercasing and stripping "
            "punctuation; wrapping the answer in a sentence or adding extra numbers after it.",
            "golden_workflow": workflow,
        }


# ---- answer checking ----------------------------------------------------------------------
def _answer_region(text: str) -> str:
    """The first non-empty line after the last ``Answer:``, else the whole text."""
    marks = list(re.finditer(r"answer\s*:", text, flags=re.IGNORECASE))
    if not marks:
        return text
    lines = [ln for ln in text[marks[-1].end():].splitlines() if ln.strip()]
    return lines[0] if lines else ""


def _answer_number(text: str) -> str | None:
    """The number right after the last ``Answer:``, else the last number (as written)."""
    marks = list(re.finditer(r"answer\s*:", text, flags=re.IGNORECASE))
    if marks:
        m = re.search(_NUM, text[marks[-1].end():])
        return m.group(0) if m else None
    found = re.findall(_NUM, text)
    return found[-1] if found else None


def _norm(s: str) -> str:
    s = s.strip().strip("`*\"' ").rstrip(".").strip("`*\"' ")
    return " ".join(s.lower().split())


def answer_matches(answer: str, expected: str, kind: str) -> bool:
    """Whether a final answer gives `expected` (an ``int``, ``float``, ``text`` or ``list``)."""
    if kind in ("int", "float"):
        got = _answer_number(answer)
        if got is None:
            return False
        got = got.replace(",", "")
        if kind == "int" and re.fullmatch(r"-?\d+", got):
            return int(got) == int(expected)  # exact, even past float precision
        try:
            value = float(got)
        except ValueError:
            return False
        if kind == "int":
            return value.is_integer() and abs(value) < 2**53 and int(value) == int(expected)
        return numbers_match(value, float(expected))
    region = _answer_region(answer)
    if kind == "list":
        items = [_norm(x) for x in re.split(r"[,;]", region.strip().strip("[]()")) if _norm(x)]
        return items == [_norm(x) for x in expected.split(",")]
    return _norm(region) == _norm(expected)


def shows(content: str, output: str) -> bool:
    """Whether a tool output shows a step's printed value (numbers with tolerance, big
    integers digit for digit, text as a whole-token run)."""
    if re.fullmatch(r"-?\d{16,}", output):
        return output in re.findall(r"-?\d+", content.replace(",", ""))
    try:
        want = float(output)
    except ValueError:
        want = None
    if want is not None:
        for n in re.findall(_NUM, content):
            try:
                if numbers_match(float(n.replace(",", "")), want):
                    return True
            except ValueError:
                continue
        return False
    need = re.findall(r"[a-z0-9]+", output.lower())
    have = re.findall(r"[a-z0-9]+", content.lower())
    return bool(need) and any(have[i : i + len(need)] == need for i in range(len(have) - len(need) + 1))

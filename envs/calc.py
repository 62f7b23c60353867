"""Calc: multi-step arithmetic and word problems solved with a calculator tool.

Each request lists the calculator steps that solve it (``steps``: expressions that may refer to
earlier results as ``{0}``, ``{1}`` ... within the request, and to the previous request's answer
as ``{prev}``). The oracle looks at which step values the agent has already obtained from the
calculator in this request and issues the first missing one, so it acts correctly from any state.
"""

from __future__ import annotations

from typing import Any

from agentopd.envs.base import ToolEnv, last_number, numbers_match
from agentopd.tools.calculator import calculator, evaluate, format_number
from agentopd.tools.core import ToolCall, ToolFailure


class CalcEnv(ToolEnv):
    family = "calc"
    instructions = (
        "You are a careful assistant that solves math problems. Always use the calculator "
        "tool for arithmetic instead of computing in your head."
    )
    answer_format = "Give your final answer as: Answer: <number>"
    example = """
user: What is 17 * 23?
assistant: <tool_call>{"name": "calculator", "arguments": {"expression": "17 * 23"}}</tool_call>
tool: 391
assistant: Answer: 391
"""

    def _init_state(self, task) -> None:
        self.answers: list[float] = [float(a) for a in task.data["answers"]]

    def _tools(self):
        return [calculator]

    def _check_request(self, index: int, answer: str) -> bool:
        return numbers_match(last_number(answer), self.answers[index])

    def _step_values(self, index: int) -> list[float]:
        env: dict[str, Any] = {}
        if index > 0:
            env["prev"] = format_number(self.answers[index - 1])
        values: list[float] = []
        for expr in self.task.data["steps"][index]:
            filled = expr.format(*[format_number(v) for v in values], **env)
            values.append(evaluate(filled))
        return values

    def _filled_steps(self, index: int) -> list[str]:
        env: dict[str, Any] = {}
        if index > 0:
            env["prev"] = format_number(self.answers[index - 1])
        values = self._step_values(index)
        return [
            expr.format(*[format_number(v) for v in values[:i]], **env)
            for i, expr in enumerate(self.task.data["steps"][index])
        ]

    def oracle_action(self) -> str:
        i = self.request_index
        seen = []
        for _, r in self.log.ok_results("calculator"):
            try:
                seen.append(float(r.content))
            except ValueError:
                pass
        for expr, value in zip(self._filled_steps(i), self._step_values(i)):
            if not any(numbers_match(s, value) for s in seen):
                return self.format_call("calculator", {"expression": expr})
        return f"Answer: {format_number(self.answers[i])}"

    def _same_call(self, student: ToolCall, expert: ToolCall) -> bool:
        if student.name != expert.name:
            return False
        try:
            got = evaluate(str(student.arguments.get("expression", "")))
            want = evaluate(str(expert.arguments["expression"]))
        except ToolFailure:
            return False
        return numbers_match(got, want)

    def skill_card(self) -> dict[str, Any]:
        steps = [s for i in range(len(self.task.requests)) for s in self._filled_steps(i)]
        return {
            "success_analysis": "Solved tasks translate the words into one calculator expression "
            "per step, reuse each result in the next expression, and end with 'Answer: <number>'.",
            "mistake_analysis": "Common failures: doing arithmetic without the tool, dropping a "
            "step of a word problem, forgetting that a follow-up refers to the previous answer, "
            "and adding units or extra numbers after the answer.",
            "golden_workflow": [f"calculator({s})" for s in steps] + ["Answer: <final value>"],
        }

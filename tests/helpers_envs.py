"""A third-party env as a user would write it (the README's example), plus a scripted policy."""

from __future__ import annotations

import time
from collections.abc import Sequence

from agentopd.core.types import Task
from agentopd.envs.base import ToolEnv
from agentopd.inference.sampling import Sample, SamplingParams
from agentopd.tools.core import format_tool_call

TASKS = [
    Task(id=f"echo-{i}", family="echo", split="train",
         requests=(f"Shout the word '{w}' with the shout tool, then tell me the result.",),
         data={"word": w})
    for i, w in enumerate(["hello", "agents", "distill"])
]


def shout(text: str) -> str:
    """Return the text in upper case.

    Args:
        text: What to shout.
    """
    return text.upper()


class EchoEnv(ToolEnv):
    """One tool, one request: call shout(word), then answer with the result."""

    family = "echo"
    instructions = "You shout words for the user."

    def __init__(self, split: str = "train", **kw):
        super().__init__(split=split, tasks=[Task(t.id, t.family, split, t.requests, t.data) for t in TASKS], **kw)

    def _tools(self):
        return [shout]

    def _check_request(self, index: int, answer: str) -> bool:
        return self.task.data["word"].upper() in answer

    def oracle_action(self) -> str:
        if not self.log.ok_results("shout"):
            return format_tool_call("shout", {"text": self.task.data["word"]})
        return f"Answer: {self.task.data['word'].upper()}"

    def skill_card(self) -> dict:
        return {"success_analysis": "call shout once", "mistake_analysis": "answering without the tool",
                "golden_workflow": ["shout(word)", "Answer: WORD"]}


class BrokenEnv(EchoEnv):
    """An env whose infrastructure fails on the second turn (not a tool error)."""

    def step(self, action):
        if self.turn >= 1:
            raise OSError("disk went away")
        return super().step(action)


class HangingEnv(EchoEnv):
    """An env whose step on task echo-1 hangs (a tool call that never returns) far past any
    test's step time limit."""

    def step(self, action):
        if self.task.id == "echo-1":
            time.sleep(900)
        return super().step(action)


class ScriptedPolicy:
    """Test double at the model boundary: replies with fixed texts, tokenized canonically."""

    def __init__(self, tokenizer, texts: Sequence[str], end: bool = True):
        self.tokenizer = tokenizer
        self.texts = list(texts)
        self.end = end
        self.calls = 0

    def sample(self, prompts, params: SamplingParams, keys=None) -> list[Sample]:
        text = self.texts[min(self.calls, len(self.texts) - 1)]
        self.calls += 1
        ids = self.tokenizer.encode(text, add_special_tokens=False)[: params.max_new_tokens]
        if self.end and len(ids) < params.max_new_tokens:
            ids = [*ids, self.tokenizer.eos_token_id]
        return [Sample(tuple(ids), tuple([-0.5] * len(ids)), "stop" if self.end else "length") for _ in prompts]


class ScriptedStream:
    """Test double at the model boundary for continuous batching: a `Generation`-like stream whose
    reply to a turn is ``texts[turn]`` (the turn is the low bits of the runner's sampler key)."""

    def __init__(self, tokenizer, texts: Sequence[str]):
        self.tokenizer = tokenizer
        self.texts = list(texts)

    def sample(self, prompts, params: SamplingParams, keys=None) -> list[Sample]:
        return [self._reply(k, params) for k in keys]

    def _reply(self, key: int, params: SamplingParams) -> Sample:
        text = self.texts[min(key & 0xFFFFF, len(self.texts) - 1)]
        ids = [*self.tokenizer.encode(text, add_special_tokens=False)[: params.max_new_tokens - 1],
               self.tokenizer.eos_token_id]
        return Sample(tuple(ids), tuple([-0.5] * len(ids)), "stop")

    def open(self, params: SamplingParams):
        stream = self

        class _Gen:
            def __init__(self):
                self.pending: list[int] = []

            def submit(self, prompt, key):
                self.pending.append(key)

            @property
            def busy(self):
                return bool(self.pending)

            def step(self):
                out, self.pending = [(k, stream._reply(k, params)) for k in self.pending], []
                return out

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                pass

        return _Gen()

"""Teacher specs: what each kind gives (known before anything loads) and how to build it.

A new teacher kind (a served model, an API) registers here: its spec prefix, the signals it
declares, and a builder."""

from __future__ import annotations

from dataclasses import dataclass

from agentopd.core.capabilities import Signal, expand
from agentopd.inference.models import load_causal_lm, load_tokenizer, parse_spec


@dataclass(frozen=True)
class TeacherKind:
    """A kind of teacher, as a config names it."""

    name: str
    """``oracle``, ``self`` or ``hf``."""
    gives: frozenset[Signal]
    """Declared signals (implied ones included by `expand`)."""
    usage: str
    """How a config names it."""


KINDS = {
    "oracle": TeacherKind("oracle", frozenset({Signal.TEXT, Signal.DEMOS}), "oracle"),
    "self": TeacherKind("self", frozenset({Signal.FULL_LOGITS}), "self"),
    "hf": TeacherKind("hf", frozenset({Signal.FULL_LOGITS, Signal.DEMOS}), "hf:<model>"),
    # what such a server can give; the probe before the first step narrows it (ServedTeacher.negotiate)
    "openai": TeacherKind("openai", frozenset({Signal.TOPK_LOGPROBS, Signal.TEXT}), "openai:<model>@<base_url>"),
}


@dataclass(frozen=True)
class ServedOptions:
    """How a run talks to a served teacher (see `agentopd.inference.openai_client`)."""

    timeout_s: float = 60.0
    max_retries: int = 6
    concurrency: int = 8
    max_requests: int = 0
    max_tokens: int = 0
    price_in: float = 0.0
    price_out: float = 0.0
    cache_path: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    max_new_tokens: int = 256


def make_client(base_url: str, model: str, o: ServedOptions):
    """A `ServedClient` for `model` at `base_url` with the run's options."""
    import os

    from agentopd.inference.openai_client import Budget, ServedClient

    return ServedClient(base_url, model, api_key=os.environ.get(o.api_key_env), timeout_s=o.timeout_s,
                        max_retries=o.max_retries, concurrency=o.concurrency,
                        budget=Budget(o.max_requests, o.max_tokens, o.price_in, o.price_out),
                        cache_path=o.cache_path)


def teacher_kind(spec: str) -> TeacherKind:
    """The kind of a teacher spec (no loading); a clear error for an unknown one."""
    if spec in ("oracle", "self"):
        return KINDS[spec]
    if spec.startswith("hf:") and len(spec) > 3:
        return KINDS["hf"]
    if spec.startswith("openai:"):
        parse_spec(spec)  # a clear error for a spec without its base url
        return KINDS["openai"]
    raise ValueError(f"unknown teacher {spec!r}: oracle | self | hf:<model> | openai:<model>@<base_url>")


def teachers_giving(signal: Signal) -> list[str]:
    """How to name each teacher kind that gives `signal` (for error messages)."""
    return [k.usage for k in KINDS.values() if signal in expand(k.gives)]


def build_teacher(spec: str, student_model, student_tokenizer, device: str = "cpu", only_diverged: bool = False,
                  dtype: str = "float32", max_tokens: int = 4096, temperature: float = 1.0,
                  served: ServedOptions | None = None):
    """Load the teacher of `spec` (the ``self`` teacher shares the student's live weights);
    local teachers score in `dtype` (bf16 under autocast, over fp32 weights), their sampled-token
    signal at `temperature`; a served teacher's client follows `served`."""
    kind = teacher_kind(spec)
    if kind.name == "openai":
        from agentopd.teachers.served import ServedTeacher

        o = served or ServedOptions()
        parsed = parse_spec(spec)
        return ServedTeacher(make_client(parsed.base_url or "", parsed.name, o), student_tokenizer,
                             max_new_tokens=o.max_new_tokens)
    if kind.name == "oracle":
        from agentopd.teachers.oracle import OracleTeacher

        return OracleTeacher(student_tokenizer, only_diverged=only_diverged)
    from agentopd.teachers.local import HFTeacher, SelfTeacher

    teacher: HFTeacher | SelfTeacher
    if kind.name == "self":
        teacher = SelfTeacher(student_model, student_tokenizer, max_tokens=max_tokens)
    else:
        name = parse_spec(spec).name
        tok = load_tokenizer(name)
        teacher = HFTeacher(load_causal_lm(name, device=device, dtype="float32"), tok, student_tokenizer,
                            max_tokens=max_tokens)
    teacher.autocast = dtype == "bfloat16"
    teacher.temperature = temperature
    return teacher

"""A small OpenAI-compatible server over a transformers model (``agentopd serve``).

It speaks the subset of vLLM's OpenAI server that agentopd's served teachers and students use,
with vLLM's field names, so the same client runs against either:

- ``GET /v1/models``; ``POST /tokenize`` and ``/detokenize`` (vLLM's tokenizer endpoints);
- ``POST /v1/completions``: ``prompt`` as text or token ids, ``max_tokens``, ``temperature``,
  ``top_p``, ``seed``, ``logprobs`` (top-k of each generated token), and vLLM's extensions
  ``prompt_logprobs`` (per prompt position: the actual token's log-prob and rank plus the
  top-k) and ``return_token_ids``; ``max_tokens`` 0 scores the prompt without generating;
- ``POST /v1/chat/completions``: the model's chat template, text in and text out.

Requests are served one at a time (one lock around the model): this is a test and small-scale
server, not a throughput engine; use vLLM for that. With ``allow_faults`` a test can script
failures (``POST /admin/faults``): 429 with Retry-After, 500, a reply slower than the client's
timeout, a malformed body, or ``down`` (503 from then on); and withhold features (``offers``)
to play a chat-only API or one without prompt logprobs.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Sequence
from typing import Any

import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from agentopd.inference.forward import logits_at
from agentopd.inference.sampling import SamplingParams

FAULTS = ("429", "500", "slow", "malformed", "down")
"""What `POST /admin/faults` can script, one per request, in order."""
FEATURES = ("completions", "prompt_logprobs", "chat", "tokenize")
"""What the server offers; `POST /admin/faults` with ``offers`` can withhold some, to play a
server that lacks them (a chat-only API, completions without prompt logprobs)."""


class ModelServer:
    """The model side of the server: generation and prompt scoring under one lock."""

    def __init__(self, policy, name: str, max_logprobs: int = 20, max_model_len: int = 8192,
                 slow_s: float = 5.0):
        self.policy = policy
        self.tokenizer = policy.tokenizer
        self.name = name
        self.max_logprobs = max_logprobs
        self.max_model_len = max_model_len
        self.slow_s = slow_s
        self.lock = threading.Lock()
        self.faults: deque[str] = deque()
        self.down = False
        self.requests = 0
        self.offers = set(FEATURES)
        self.tool_parser: str | None = None
        """``hermes``: chat replies carry their ``<tool_call>`` blocks as structured ``tool_calls``
        (vLLM's ``--tool-call-parser hermes``); None: text only."""

    # ---- model work -------------------------------------------------------------------
    def _decoded(self, i: int) -> str:
        return self.tokenizer.decode([i], skip_special_tokens=False, clean_up_tokenization_spaces=False)

    @torch.no_grad()
    def prompt_logprobs(self, ids: Sequence[int], k: int) -> list[dict[str, dict[str, Any]] | None]:
        """vLLM's ``prompt_logprobs``: None for the first token, then per position the actual
        token (always) and the top-k, each with its log-prob and 1-based rank."""
        out: list[dict[str, dict[str, Any]] | None] = [None]
        model = self.policy.model
        for lo in range(0, len(ids) - 1, 512):  # (positions x vocabulary) stays small
            pos = list(range(lo, min(lo + 512, len(ids) - 1)))
            logp_NV = torch.log_softmax(logits_at(model, [list(ids)], [pos]).float(), dim=-1)
            nxt = torch.tensor([ids[p + 1] for p in pos])
            actual = logp_NV.gather(-1, nxt[:, None]).squeeze(-1)
            rank = (logp_NV > actual[:, None]).sum(-1) + 1
            top = logp_NV.topk(k, dim=-1) if k > 0 else None
            for j, p in enumerate(pos):
                entry = {str(ids[p + 1]): {"logprob": float(actual[j]), "rank": int(rank[j]),
                                           "decoded_token": self._decoded(ids[p + 1])}}
                if top is not None:
                    for r, (t, v) in enumerate(zip(top.indices[j].tolist(), top.values[j].tolist()), 1):
                        entry.setdefault(str(t), {"logprob": float(v), "rank": r, "decoded_token": self._decoded(t)})
                out.append(entry)
        return out

    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams):
        return self.policy.sample(prompts, params, keys=list(range(len(prompts))))

    # ---- request handling -------------------------------------------------------------
    def completions(self, body: dict[str, Any]) -> dict[str, Any]:
        prompts = self._prompts(body.get("prompt"))
        raw = body.get("max_tokens")
        if raw is not None and (not isinstance(raw, int) or raw < 0):
            raise BadRequest("max_tokens must be a non-negative integer")
        max_tokens = 16 if raw is None else raw
        k_prompt = body.get("prompt_logprobs")
        k_gen = body.get("logprobs")
        if k_prompt is not None and "prompt_logprobs" not in self.offers:
            raise BadRequest("Unrecognized request argument supplied: prompt_logprobs")
        for what, k in (("prompt logprobs", k_prompt), ("logprobs", k_gen)):
            if k is not None and (not isinstance(k, int) or k < 0):
                raise BadRequest(f"{what} must be a non-negative integer")
            if k is not None and k > self.max_logprobs:
                raise BadRequest(f"Requested {what} of {k}, which is greater than max allowed: {self.max_logprobs}")
        for p in prompts:
            if len(p) + max_tokens > self.max_model_len:
                raise BadRequest(f"This model's maximum context length is {self.max_model_len} tokens; "
                                 f"the request has {len(p)} prompt tokens and {max_tokens} to generate")
        params = SamplingParams(max_new_tokens=max_tokens, temperature=float(body.get("temperature", 1.0)),
                                top_p=float(body.get("top_p", 1.0)), seed=int(body.get("seed") or 0))
        with self.lock:
            samples = self.generate(prompts, params) if max_tokens > 0 else [None] * len(prompts)
            scored = [self.prompt_logprobs(p, k_prompt) if k_prompt is not None else None for p in prompts]
        choices, n_out = [], 0
        for i, (p, s, pl) in enumerate(zip(prompts, samples, scored)):
            ids = list(s.token_ids) if s is not None else []
            n_out += len(ids)
            choice: dict[str, Any] = {
                "index": i, "text": self.tokenizer.decode(ids, skip_special_tokens=True),
                "finish_reason": s.finish_reason if s is not None else "length", "logprobs": None,
            }
            if k_gen is not None and s is not None:
                choice["logprobs"] = {"tokens": [self._decoded(t) for t in ids],
                                      "token_logprobs": list(s.logprobs), "top_logprobs": None,
                                      "text_offset": None}
            if pl is not None:
                choice["prompt_logprobs"] = pl
            if body.get("return_token_ids"):
                choice["token_ids"] = ids
                choice["prompt_token_ids"] = list(p)
            choices.append(choice)
        n_in = sum(len(p) for p in prompts)
        return {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
                "model": self.name, "choices": choices,
                "usage": {"prompt_tokens": n_in, "completion_tokens": n_out, "total_tokens": n_in + n_out}}

    def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BadRequest("messages must be a non-empty list")
        try:
            ids = self.tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
        except Exception as e:  # noqa: BLE001 - a template error is the client's bad input
            raise BadRequest(f"cannot render messages: {e}") from None
        if hasattr(ids, "keys"):  # transformers 5 returns a BatchEncoding
            ids = ids["input_ids"]
        body = {**body, "prompt": list(ids), "return_token_ids": False, "logprobs": None, "prompt_logprobs": None}
        out = self.completions(body)
        c = out["choices"][0]
        message: dict[str, Any] = {"role": "assistant", "content": c["text"]}
        if self.tool_parser == "hermes":
            content, calls = hermes_tool_calls(c["text"])
            if calls:
                message = {"role": "assistant", "content": content, "tool_calls": calls}
        out["choices"] = [{"index": 0, "message": message,
                           "finish_reason": "tool_calls" if "tool_calls" in message else c["finish_reason"]}]
        out["object"] = "chat.completion"
        return out

    def _prompts(self, prompt: Any) -> list[list[int]]:
        if isinstance(prompt, str):
            return [self.tokenizer.encode(prompt, add_special_tokens=False)]
        if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
            return [list(prompt)]
        if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
            return [self.tokenizer.encode(p, add_special_tokens=False) for p in prompt]
        if (isinstance(prompt, list) and prompt
                and all(isinstance(p, list) and p and all(isinstance(t, int) for t in p) for p in prompt)):
            return [list(p) for p in prompt]
        raise BadRequest("prompt must be a string, a list of strings, token ids, or a list of token-id lists")

    def next_fault(self) -> str | None:
        if self.down:
            return "down"
        return self.faults.popleft() if self.faults else None


_HERMES = re.compile(r"<tool_call>(.*?)</tool_call>", re.DOTALL)


def hermes_tool_calls(text: str) -> tuple[str | None, list[dict[str, Any]]]:
    """Split a reply into its prose and its ``<tool_call>`` blocks as OpenAI ``tool_calls``
    (what vLLM's hermes parser does); a block that is not a JSON call stays in the prose."""
    calls: list[dict[str, Any]] = []

    def take(m: re.Match) -> str:
        try:
            obj = json.loads(m.group(1))
        except json.JSONDecodeError:
            return m.group(0)
        if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
            return m.group(0)
        calls.append({"id": f"call_{len(calls)}", "type": "function",
                      "function": {"name": obj["name"], "arguments": json.dumps(obj.get("arguments", {}))}})
        return ""

    rest = _HERMES.sub(take, text).strip()
    return (rest or None), calls


class BadRequest(ValueError):
    """The client's request is invalid (answered with 400 and the message)."""


def create_app(server: ModelServer, allow_faults: bool = False):
    """The FastAPI app serving `server`."""
    app = FastAPI(title="agentopd model server")

    def error(status: int, message: str, kind: str, headers: dict[str, str] | None = None):
        return JSONResponse({"error": {"message": message, "type": kind, "code": status}}, status, headers=headers)

    def handle(fn, body: Any):
        server.requests += 1
        fault = server.next_fault()
        if fault == "429":
            return error(429, "rate limited (injected)", "rate_limit_error", {"Retry-After": "1"})
        if fault == "500":
            return error(500, "internal error (injected)", "server_error")
        if fault == "down":
            server.down = True
            return error(503, "the server is down (injected)", "server_error")
        if fault == "malformed":
            return Response('{"choices": [ {"text": "tru', media_type="application/json")
        if fault == "slow":
            time.sleep(server.slow_s)
        if not isinstance(body, dict):
            return error(400, "the body must be a JSON object", "invalid_request_error")
        if body.get("model") not in (None, server.name):
            return error(404, f"The model `{body.get('model')}` does not exist.", "NotFoundError")
        try:
            return fn(body)
        except BadRequest as e:
            return error(400, str(e), "invalid_request_error")

    async def read(request: Request) -> Any:
        try:
            return await request.json()
        except json.JSONDecodeError:
            return None

    @app.get("/v1/models")
    def models():
        return {"object": "list", "data": [{"id": server.name, "object": "model", "owned_by": "agentopd",
                                            "max_model_len": server.max_model_len}]}

    def absent(feature: str):
        return error(404, f"this server does not offer {feature}", "NotFoundError")

    @app.post("/v1/completions")
    async def completions(request: Request):
        if "completions" not in server.offers:
            return absent("/v1/completions")
        body = await read(request)
        return await _threaded(handle, server.completions, body)

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        if "chat" not in server.offers:
            return absent("/v1/chat/completions")
        body = await read(request)
        return await _threaded(handle, server.chat, body)

    @app.post("/tokenize")
    async def tokenize(request: Request):
        if "tokenize" not in server.offers:
            return absent("/tokenize")
        body = await read(request) or {}
        ids = server.tokenizer.encode(str(body.get("prompt", "")), add_special_tokens=bool(body.get("add_special_tokens", False)))
        return {"tokens": ids, "count": len(ids), "max_model_len": server.max_model_len}

    @app.post("/detokenize")
    async def detokenize(request: Request):
        body = await read(request) or {}
        return {"prompt": server.tokenizer.decode(list(body.get("tokens", [])), skip_special_tokens=False)}

    if allow_faults:
        @app.post("/admin/faults")
        async def faults(request: Request):
            body = await read(request) or {}
            plan = list(body.get("faults", []))
            bad = [f for f in plan if f not in FAULTS]
            if bad:
                return error(400, f"unknown faults {bad}: use {', '.join(FAULTS)}", "invalid_request_error")
            offers = set(body.get("offers", FEATURES))
            if offers - set(FEATURES):
                return error(400, f"unknown features {sorted(offers - set(FEATURES))}: use {', '.join(FEATURES)}",
                             "invalid_request_error")
            server.faults = deque(plan)
            server.down = False
            server.offers = offers
            if "slow_s" in body:
                server.slow_s = float(body["slow_s"])
            server.tool_parser = body.get("tool_parser")
            return {"faults": plan, "requests": server.requests, "offers": sorted(offers)}

    return app


async def _threaded(fn, *args):
    """Model work off the event loop, so /v1/models and fault scripting answer meanwhile."""
    import anyio

    return await anyio.to_thread.run_sync(fn, *args)


def serve(model: str, host: str = "127.0.0.1", port: int = 8000, name: str | None = None, dtype: str = "auto",
          max_logprobs: int = 20, allow_faults: bool = False, tool_call_parser: str | None = None) -> None:
    """Load `model` (an ``hf:`` spec) and serve it until interrupted."""
    import uvicorn

    from agentopd.inference.hf import HFPolicy
    from agentopd.inference.models import parse_spec

    spec = parse_spec(model)
    if spec.backend != "hf":
        raise ValueError(f"agentopd serve runs transformers models: pass hf:<model>, not {model!r}")
    policy = HFPolicy.from_spec(spec.name, dtype=dtype)
    if tool_call_parser not in (None, "hermes"):
        raise ValueError(f"tool_call_parser {tool_call_parser!r}: use hermes (or none)")
    server = ModelServer(policy, name or spec.name, max_logprobs=max_logprobs)
    server.tool_parser = tool_call_parser
    uvicorn.run(create_app(server, allow_faults), host=host, port=port, log_level="warning")

"""A client for OpenAI-compatible servers (vLLM, agentopd serve, a paid API), made for training.

One `ServedClient` is shared by a run's served teacher or student. It adds to the `openai` SDK:

- retries (tenacity) on 429, 5xx, timeouts, dropped connections and malformed replies, with
  exponential backoff and jitter, honouring the server's Retry-After;
- a concurrency limit (at most `concurrency` requests in flight);
- a per-run budget of requests and tokens, and cost accounting at the given prices;
- an on-disk cache (SQLite) keyed by the exact request, so a resumed run does not pay twice;
- `probe()`: what the server offers (completions, prompt logprobs and their top-k limit, chat,
  the tokenizer endpoint), so a run picks or refuses an objective before its first step.

A request that still fails after the retries raises `ServerUnavailable`; one the server refuses
(400, 401, 404) raises `ServerRefused` at once. Both say what happened in one line.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RETRY_AFTER_CAP_S = 60.0
"""A server's Retry-After is honoured up to this many seconds (then the backoff takes over)."""


class ServedError(RuntimeError):
    """A request to a served model failed."""


class ServerUnavailable(ServedError):
    """The server stopped answering (retries exhausted): the run stops with a checkpoint."""


class ServerRefused(ServedError):
    """The server refused the request (bad request, auth, unknown model): retrying cannot help."""


class BudgetExceeded(ServedError):
    """The run's request or token budget for this server is spent."""


class MalformedReply(ServedError):
    """The server answered 200 with a body that is not the expected JSON."""


@dataclass(frozen=True)
class Budget:
    """Limits for one run (0 = unlimited) and prices in US dollars per million tokens."""

    max_requests: int = 0
    max_tokens: int = 0
    price_in: float = 0.0
    price_out: float = 0.0


@dataclass(frozen=True)
class Capabilities:
    """What a server offers, found by `ServedClient.probe`."""

    completions: bool
    """``/v1/completions`` answers (token-id prompts)."""
    prompt_logprobs: bool
    """Completions return vLLM's ``prompt_logprobs`` (a logprob teacher is possible)."""
    max_topk: int
    """The largest top-k of prompt logprobs it allows (0 when it gives none)."""
    chat: bool
    """``/v1/chat/completions`` answers (a black-box, text-only teacher is possible)."""
    token_ids_out: bool
    """Completions can return the sampled token ids (``return_token_ids``)."""
    tokenize: bool
    """``/tokenize`` answers (the tokenizer check uses it)."""
    models: tuple[str, ...] = ()


_MAX_ALLOWED = re.compile(r"max(?:imum)? allowed:?\s*(\d+)", re.I)


class ServedClient:
    """Requests to one OpenAI-compatible server for one model (thread-safe)."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None, timeout_s: float = 60.0,
                 max_retries: int = 6, concurrency: int = 8, budget: Budget = Budget(),
                 cache_path: str | Path | None = None, backoff_s: float = 0.5, max_backoff_s: float = 30.0):
        import openai

        self.base_url = base_url.rstrip("/")
        self.model = model
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s
        self.budget = budget
        # retries are ours (tenacity): the SDK's own would hide them from the counters
        self.sdk = openai.OpenAI(base_url=self.base_url, api_key=api_key or "EMPTY", timeout=timeout_s, max_retries=0)
        self._slots = threading.BoundedSemaphore(max(1, concurrency))
        self.concurrency = max(1, concurrency)
        self._lock = threading.Lock()
        self.counts = {"requests": 0, "cache_hits": 0, "retries": 0, "errors": 0, "prompt_tokens": 0,
                       "completion_tokens": 0, "peak_in_flight": 0}
        self._in_flight = 0
        self.cache = _Cache(cache_path) if cache_path else None

    # ---- accounting -------------------------------------------------------------------
    def metrics(self, prefix: str = "teacher") -> dict[str, float]:
        """Cumulative counters and cost, as ``<prefix>/...`` metrics."""
        c = dict(self.counts)
        cost = (c["prompt_tokens"] * self.budget.price_in + c["completion_tokens"] * self.budget.price_out) / 1e6
        return {f"{prefix}/{k}": float(v) for k, v in c.items()} | {f"{prefix}/cost_usd": cost}

    def _charge(self, usage: dict[str, Any] | None) -> None:
        usage = usage or {}
        with self._lock:
            self.counts["prompt_tokens"] += int(usage.get("prompt_tokens") or 0)
            self.counts["completion_tokens"] += int(usage.get("completion_tokens") or 0)

    def _check_budget(self) -> None:
        b, c = self.budget, self.counts
        if b.max_requests and c["requests"] >= b.max_requests:
            raise BudgetExceeded(f"the request budget for {self.base_url} is spent ({b.max_requests} requests)")
        if b.max_tokens and c["prompt_tokens"] + c["completion_tokens"] >= b.max_tokens:
            raise BudgetExceeded(f"the token budget for {self.base_url} is spent ({b.max_tokens} tokens)")

    # ---- requests ---------------------------------------------------------------------
    def post(self, path: str, body: dict[str, Any], cache: bool = True) -> dict[str, Any]:
        """POST `body` to `path` (relative to the base url, e.g. ``/completions``) and return the
        reply's JSON, from the cache when this exact request was answered before."""
        key = _key(self.base_url, path, body)
        if cache and self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None:
                with self._lock:
                    self.counts["cache_hits"] += 1
                return hit
        out = self._with_retries(lambda: self._post_once(path, body))
        if cache and self.cache is not None:
            self.cache.put(key, out)
        return out

    def _post_once(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        with self._slots:
            with self._lock:
                self._check_budget()
                self.counts["requests"] += 1
                self._in_flight += 1
                self.counts["peak_in_flight"] = max(self.counts["peak_in_flight"], self._in_flight)
            try:
                text = self.sdk.post(path, body=body, cast_to=str)  # the raw body: we validate it
            finally:
                with self._lock:
                    self._in_flight -= 1
        try:
            out = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise MalformedReply(f"{self.base_url}{path} answered with a body that is not JSON ({e})") from None
        if not isinstance(out, dict):
            raise MalformedReply(f"{self.base_url}{path} answered with JSON that is not an object")
        self._charge(out.get("usage"))
        return out

    def _with_retries(self, fn):
        import openai
        from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt

        def retryable(e: BaseException) -> bool:
            return isinstance(e, (openai.RateLimitError, openai.InternalServerError, openai.APITimeoutError,
                                  openai.APIConnectionError, MalformedReply)) or (
                isinstance(e, openai.APIStatusError) and e.status_code >= 500)

        def wait(state: RetryCallState) -> float:
            e = state.outcome.exception() if state.outcome else None
            after = _retry_after(e)
            if after is not None:
                return min(after, RETRY_AFTER_CAP_S)
            # full jitter (the AWS backoff note): uniform up to the exponential ceiling
            return random.uniform(0, min(self.max_backoff_s, self.backoff_s * 2 ** (state.attempt_number - 1)))

        def count(_: RetryCallState) -> None:
            with self._lock:
                self.counts["retries"] += 1

        try:
            for attempt in Retrying(retry=retry_if_exception(retryable), wait=wait, reraise=True,
                                    stop=stop_after_attempt(self.max_retries + 1), before_sleep=count):
                with attempt:
                    return fn()
        except BudgetExceeded:
            raise
        except openai.APIStatusError as e:
            with self._lock:
                self.counts["errors"] += 1
            msg = _message(e)
            if e.status_code >= 500 or e.status_code == 429:
                raise ServerUnavailable(f"{self.base_url} answered {e.status_code} {self.max_retries + 1} times "
                                        f"({msg})") from None
            raise ServerRefused(f"{self.base_url} refused the request: {e.status_code} {msg}") from None
        except (openai.APITimeoutError, openai.APIConnectionError, MalformedReply) as e:
            with self._lock:
                self.counts["errors"] += 1
            what = "timed out" if isinstance(e, openai.APITimeoutError) else (
                "sent malformed replies" if isinstance(e, MalformedReply) else "could not be reached")
            raise ServerUnavailable(f"{self.base_url} {what} {self.max_retries + 1} times in a row "
                                    f"(timeout {self.timeout_s:g} s)") from None
        raise AssertionError("unreachable")  # pragma: no cover

    # ---- endpoints ----------------------------------------------------------------------
    def completion(self, prompt: Sequence[int] | str, max_tokens: int, cache: bool = True,
                   **extra: Any) -> dict[str, Any]:
        body = {"model": self.model, "prompt": list(prompt) if not isinstance(prompt, str) else prompt,
                "max_tokens": max_tokens, **extra}
        out = self.post("/completions", body, cache=cache)
        if not isinstance(out.get("choices"), list) or not out["choices"]:
            raise MalformedReply(f"{self.base_url}/completions answered without choices")
        return out["choices"][0]

    def chat(self, messages: Sequence[dict[str, Any]], max_tokens: int, cache: bool = True, **extra: Any) -> str:
        """The reply's text content ("" when it has none, e.g. only structured tool calls)."""
        return self.chat_message(messages, max_tokens, cache, **extra).get("content") or ""

    def chat_message(self, messages: Sequence[dict[str, Any]], max_tokens: int, cache: bool = True,
                     **extra: Any) -> dict[str, Any]:
        """The reply's assistant message: ``content`` and, from servers that parse calls (vLLM's
        ``--tool-call-parser``, the OpenAI API), structured ``tool_calls``."""
        body = {"model": self.model, "messages": list(messages), "max_tokens": max_tokens, **extra}
        out = self.post("/chat/completions", body, cache=cache)
        try:
            message = out["choices"][0]["message"]
        except (KeyError, IndexError, TypeError):
            raise MalformedReply(f"{self.base_url}/chat/completions answered without a message") from None
        if not isinstance(message, dict):
            raise MalformedReply(f"{self.base_url}/chat/completions answered with a message that is not an object")
        return message

    def tokenize(self, text: str) -> list[int] | None:
        """Token ids of `text` by the server's tokenizer, or None when it has no /tokenize."""
        import openai

        root = re.sub(r"/v1$", "", self.base_url)
        try:
            out = self._with_retries(lambda: self._raw_post(f"{root}/tokenize",
                                                            {"model": self.model, "prompt": text,
                                                             "add_special_tokens": False}))
        except ServerRefused:
            return None
        except openai.NotFoundError:  # pragma: no cover - mapped to ServerRefused above
            return None
        toks = out.get("tokens")
        return list(toks) if isinstance(toks, list) else None

    def _raw_post(self, url: str, body: dict[str, Any]) -> dict[str, Any]:
        with self._slots:
            text = self.sdk.post(url, body=body, cast_to=str)
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            raise MalformedReply(f"{url} answered with a body that is not JSON") from None

    def probe(self, ids: Sequence[int], want_topk: int = 20) -> Capabilities:
        """Ask the server what it offers, with a few tiny requests (not cached, not budgeted
        beyond their count): `ids`, a short token-id prompt, is scored once."""
        models: tuple[str, ...] = ()
        try:
            listed = self.sdk.models.list()
            models = tuple(m.id for m in listed.data)
        except Exception:  # noqa: BLE001 - some APIs do not list models; the calls below decide
            pass
        completions = prompt_lp = token_ids = chat = False
        max_topk = 0
        try:
            choice = self.completion(list(ids), 1, cache=False, temperature=0.0, prompt_logprobs=max(1, want_topk),
                                     return_token_ids=True)
            completions = True
            prompt_lp = isinstance(choice.get("prompt_logprobs"), list)
            token_ids = isinstance(choice.get("token_ids"), list)
            max_topk = max(1, want_topk) if prompt_lp else 0
        except ServerRefused as e:
            m = _MAX_ALLOWED.search(str(e))
            if m:  # it gives prompt logprobs, up to a limit
                max_topk = int(m.group(1))
                choice = self.completion(list(ids), 1, cache=False, temperature=0.0, prompt_logprobs=max_topk,
                                         return_token_ids=True)
                completions, prompt_lp = True, isinstance(choice.get("prompt_logprobs"), list)
                token_ids = isinstance(choice.get("token_ids"), list)
                max_topk = max_topk if prompt_lp else 0
            elif "does not exist" in str(e) or " 404 " in str(e):
                if models and self.model not in models:
                    raise ServerRefused(f"{self.base_url} has no model {self.model!r} (it serves: "
                                        f"{', '.join(models)})") from None
                try:  # completions may be absent (a chat-only API): try without the extensions
                    self.completion(list(ids), 1, cache=False, temperature=0.0)
                    completions = True
                except ServerRefused:
                    completions = False
            else:
                try:
                    self.completion(list(ids), 1, cache=False, temperature=0.0)
                    completions = True
                except ServerRefused:
                    completions = False
        try:
            self.chat([{"role": "user", "content": "ping"}], 1, cache=False, temperature=0.0)
            chat = True
        except ServerRefused:
            chat = False
        tokenize = self.tokenize("ok") is not None
        if not (completions or chat):
            raise ServerRefused(f"{self.base_url} answers neither /completions nor /chat/completions for "
                                f"model {self.model!r}")
        return Capabilities(completions, prompt_lp, max_topk, chat, token_ids, tokenize, models)

    def check_tokenizer(self, tokenizer, caps: Capabilities) -> None:
        """Refuse a server whose tokenizer differs from `tokenizer`: a logprob teacher scores
        the student's exact token ids, so both must share one vocabulary."""
        probe = "Hello, world! 123 <tool_call>{\"name\": \"x\"}</tool_call> ünïcödé"
        mine = tokenizer.encode(probe, add_special_tokens=False)
        if caps.tokenize:
            theirs = self.tokenize(probe)
            if theirs is not None and list(theirs) != list(mine):
                raise ServerRefused(
                    f"the tokenizer of {self.model!r} at {self.base_url} differs from the student's "
                    f"({len(theirs)} vs {len(mine)} ids for a probe text): a logprob teacher scores the "
                    "student's exact ids; serve a teacher of the student's family, or use --loss dagger "
                    "(a text relabel needs no shared vocabulary)")
            return
        if caps.prompt_logprobs:  # no /tokenize: compare the decoded tokens the server reports
            choice = self.completion(mine, 1, cache=False, temperature=0.0, prompt_logprobs=0)
            pl = choice.get("prompt_logprobs") or []
            for p in range(1, min(len(pl), len(mine))):
                got = (pl[p] or {}).get(str(mine[p]), {}).get("decoded_token")
                want = tokenizer.decode([mine[p]], skip_special_tokens=False, clean_up_tokenization_spaces=False)
                if got is not None and got != want:
                    raise ServerRefused(
                        f"the tokenizer of {self.model!r} at {self.base_url} differs from the student's "
                        f"(id {mine[p]} is {got!r} there, {want!r} here): serve a teacher of the student's "
                        "family, or use --loss dagger")


def _retry_after(e: BaseException | None) -> float | None:
    """Seconds the server asked to wait (``retry-after-ms`` or ``Retry-After``), if any."""
    resp = getattr(e, "response", None)
    headers = getattr(resp, "headers", None)
    if headers is None:
        return None
    for name, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        v = headers.get(name)
        if v is not None:
            try:
                return max(0.0, float(v) * scale)
            except ValueError:
                return None  # an HTTP date: fall back to the backoff
    return None


def _message(e: Any) -> str:
    body = getattr(e, "body", None)
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if body.get("message"):
            return str(body["message"])
    return str(getattr(e, "message", "") or e).splitlines()[0]


def _key(base_url: str, path: str, body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps([base_url, path, body], sort_keys=True).encode()).hexdigest()


class _Cache:
    """Replies by request key, in one SQLite file (safe across threads and a killed run)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None

    @property
    def _db(self) -> sqlite3.Connection:
        """Opened on first use: a run that fails its checks before any request writes nothing."""
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(str(self.path), check_same_thread=False)
            self._conn.execute("CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, body TEXT NOT NULL)")
            self._conn.commit()
        return self._conn

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT body FROM replies WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, body: dict[str, Any]) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO replies VALUES (?, ?)", (key, json.dumps(body)))
            self._db.commit()

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM replies").fetchone()[0])

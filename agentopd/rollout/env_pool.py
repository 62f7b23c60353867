"""Where a rollout's envs live and step: the `EnvPool` interface and its local implementation.

A pool owns its envs: it makes each from a factory, resets it, reads its capabilities through
the wrapper stack, steps many at once and closes them. The runner holds `EnvHandle`s, never the
envs, so a pool may keep them in other processes (`ray_pool.RayEnvPool`, ``--env-pool ray``).
A step's future resolves to Gymnasium's 5-tuple, or to the error text when the env raised or
ran past the pool's `step_timeout_s`; the runner ends that episode with ``StopReason.ERROR`` and
the others go on. The limit is a backstop over the tools' own per-call limits and covers steps
(where tools run), not resets: a hung step's thread is abandoned, never joined.

`ThreadEnvPool` (``--env-pool threads``, the default) steps envs on threads of this process:
tool calls such as the Python sandbox and SQLite wait on subprocesses or release the GIL.
"""

from __future__ import annotations

import functools
import importlib.util
import itertools
import queue
import sys
import threading
import time
import traceback
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import Future, InvalidStateError
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass
from typing import Any, SupportsFloat

import gymnasium as gym

StepResult = tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]
"""Gymnasium's (obs, reward, terminated, truncated, info)."""
EnvFactory = Callable[[], gym.Env]
"""Makes one env; a remote pool pickles it (cloudpickle: a closure or lambda is fine)."""
ENV_POOLS = ("threads", "ray")
RAY_HINT = "--env-pool ray needs Ray, which is not installed here: pip install 'ray>=2.40' (the agentopd ray extra)"


@dataclass(frozen=True)
class Reset:
    """What the runner reads of an env as its episode starts (one round trip to a remote env)."""

    obs: Any
    """Gymnasium's first observation."""
    info: dict[str, Any]
    """Gymnasium's reset info (``task_id``, ...)."""
    overrides_oracle: bool
    """Whether a wrapper overrides the env's own `oracle_action`: then the runner asks the
    wrapper stack every turn; otherwise the env's oracle is already in each step's info."""
    skill_card: dict[str, Any] | None = None
    """The task's skill card, when the reset asked for it."""


@dataclass(frozen=True, eq=False)
class EnvHandle:
    """One env of a pool, as the runner holds it: every call goes through the pool."""

    pool: EnvPool
    key: int
    """The env's name inside its pool."""

    def reset(self, seed: int | None, options: dict[str, Any] | None = None, skill_card: bool = False) -> Reset:
        return self.pool.reset(self, seed, options, skill_card)

    def submit(self, action: str) -> Future[StepResult | str]:
        return self.pool.submit(self, action)

    def get_wrapper_attr(self, name: str) -> Callable[..., Any]:
        """A capability (``oracle_action``, ``skill_card``) as a callable that runs where the env
        lives: what a privileged message policy calls on `MessageState.env` under a remote pool."""
        return functools.partial(self.pool.call, self, name)

    def oracle_action(self) -> str:
        """The wrapper stack's expert turn for the env's current state."""
        return self.pool.call(self, "oracle_action")

    def view(self) -> Any:
        """What a message policy sees as `MessageState.env` (see `EnvPool.view`)."""
        return self.pool.view(self)

    def close(self) -> None:
        self.pool.close_env(self)


class EnvPool(ABC):
    """Owns a rollout's envs (the module docstring says what it promises); close it when done."""

    def __init__(self, step_timeout_s: float = 300.0):
        if step_timeout_s < 0:
            raise ValueError("step_timeout_s must be >= 0 (0 = no limit)")
        self.step_timeout_s = step_timeout_s
        """Seconds a step may run before its future resolves to `timeout_text` (0 = no limit)."""
        self._keys = itertools.count()

    @abstractmethod
    def make(self, make_env: EnvFactory) -> EnvHandle:
        """A new env from `make_env` (a remote pool may build it where it lives, at its first reset)."""

    @abstractmethod
    def reset(self, env: EnvHandle, seed: int | None, options: dict[str, Any] | None = None,
              skill_card: bool = False) -> Reset:
        """Gymnasium's reset, plus what the runner reads at the start; raises what the env raises."""

    @abstractmethod
    def submit(self, env: EnvHandle, action: str) -> Future[StepResult | str]:
        """Step one env in the background. The future never raises: an env that raises, dies or
        runs past `step_timeout_s` gives the error text instead of a result."""

    def step(self, envs: Sequence[EnvHandle], actions: Sequence[str]) -> list[StepResult | str]:
        """Step many envs at once (a lock-step turn)."""
        futures = [self.submit(e, a) for e, a in zip(envs, actions, strict=True)]
        return [f.result() for f in futures]

    @abstractmethod
    def call(self, env: EnvHandle, name: str, *args: Any) -> Any:
        """``env.get_wrapper_attr(name)(*args)``, run where the env lives."""

    @abstractmethod
    def view(self, env: EnvHandle) -> Any:
        """What a message policy sees of the env (`MessageState.env`): the env itself when it
        lives in this process, else the handle (its `get_wrapper_attr` reaches the env)."""

    @abstractmethod
    def close_env(self, env: EnvHandle) -> None:
        """Close one env; never waits on a step that ran past the time limit."""

    @abstractmethod
    def close(self) -> None:
        """Close every env still open and stop the workers, never waiting on a hung step."""

    def timeout_text(self) -> str:
        return (f"env step exceeded {self.step_timeout_s:g} s (the env pool's time limit, "
                "--env-step-timeout); the episode was stopped")

    def __enter__(self) -> EnvPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_env_pool(kind: str) -> None:
    """One-line errors for an env pool that does not exist or that this machine cannot give."""
    if kind not in ENV_POOLS:
        raise ValueError(f"env_pool {kind!r}: use {' or '.join(ENV_POOLS)}")
    if kind == "ray" and not ray_installed():
        raise ValueError(RAY_HINT)


def ray_installed() -> bool:
    try:
        return importlib.util.find_spec("ray") is not None
    except ValueError:  # a `ray` in sys.modules without a spec (blocked, or a stub)
        return sys.modules.get("ray") is not None


def make_env_pool(kind: str = "threads", workers: int = 8, step_timeout_s: float = 300.0,
                  envs: int = 0) -> EnvPool:
    """The pool `kind` names, for a batch of `envs` envs: ``threads`` (`workers` threads here) or
    ``ray`` (at most `workers` Ray actors, one per CPU of the cluster; Ray starts on first use)."""
    check_env_pool(kind)
    if kind == "ray":
        from agentopd.rollout.ray_pool import RayEnvPool

        return RayEnvPool.for_batch(envs, workers, step_timeout_s)
    return ThreadEnvPool(workers, step_timeout_s)


class ThreadEnvPool(EnvPool):
    """Envs in this process, stepped on `workers` daemon threads. A step past the time limit
    leaves its thread behind (a fresh one takes its place; daemon threads never block exit), and
    its env is closed on a thread of its own."""

    def __init__(self, workers: int = 8, step_timeout_s: float = 300.0):
        super().__init__(step_timeout_s)
        self._envs: dict[int, gym.Env] = {}
        self._inflight: dict[int, Future[StepResult | str]] = {}
        self._stuck: set[int] = set()
        """Keys of envs whose step ran past the limit (still running on an abandoned thread)."""
        self._jobs: queue.SimpleQueue[tuple[Future[StepResult | str], int, str] | None] = queue.SimpleQueue()
        self._deadlines = Deadlines(step_timeout_s) if step_timeout_s else None
        self._workers = max(1, workers)
        for _ in range(self._workers):
            self._spawn()

    def make(self, make_env: EnvFactory) -> EnvHandle:
        handle = EnvHandle(self, next(self._keys))
        self._envs[handle.key] = make_env()
        return handle

    def reset(self, env: EnvHandle, seed: int | None, options: dict[str, Any] | None = None,
              skill_card: bool = False) -> Reset:
        return reset_env(self._envs[env.key], seed, options, skill_card)

    def submit(self, env: EnvHandle, action: str) -> Future[StepResult | str]:
        fut: Future[StepResult | str] = Future()
        if env.key in self._stuck:
            settle(fut, f"env is stuck in an earlier step: {self.timeout_text()}")
        else:
            self._inflight[env.key] = fut
            self._jobs.put((fut, env.key, action))
        return fut

    def call(self, env: EnvHandle, name: str, *args: Any) -> Any:
        return self._envs[env.key].get_wrapper_attr(name)(*args)

    def view(self, env: EnvHandle) -> gym.Env:
        return self._envs[env.key]

    def close_env(self, env: EnvHandle) -> None:
        self._close(env.key)

    def close(self) -> None:
        for key in list(self._envs):
            self._close(key)
        for _ in range(self._workers):
            self._jobs.put(None)
        if self._deadlines is not None:
            self._deadlines.close()

    def _close(self, key: int) -> None:
        fut = self._inflight.pop(key, None)
        if fut is not None:  # settles by the deadline at the latest
            wait_futures([fut])
        env = self._envs.pop(key, None)
        if env is None:
            return
        if key in self._stuck:  # its step is still running: close beside it, never wait
            threading.Thread(target=env.close, daemon=True, name="env-close").start()
        else:
            env.close()

    def _spawn(self) -> None:
        threading.Thread(target=self._work, daemon=True, name="env-step").start()

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            fut, key, action = job
            if not fut.set_running_or_notify_cancel():  # cancelled while queued; a running step cannot be
                continue
            if self._deadlines is not None:  # the limit runs from the step's start, not its queueing
                self._deadlines.watch(fut, functools.partial(self._expire, fut, key))
            env = self._envs.get(key)
            res = _safe_step(env, action) if env is not None else "env was closed before its step ran"
            if not settle(fut, res):
                return  # this step ran past the limit: a fresh thread already took this one's place

    def _expire(self, fut: Future[StepResult | str], key: int) -> None:
        self._stuck.add(key)  # first: a runner that reads the error must find its env stuck
        if settle(fut, self.timeout_text()):
            self._spawn()
        else:  # the step finished at the last moment
            self._stuck.discard(key)


class Deadlines:
    """Calls each watched future's `on_due` once it has run `seconds` unsettled (one daemon
    thread that ticks; a settled future is forgotten at once, so nothing of it is kept)."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self._watched: dict[Future, tuple[float, Callable[[], None]]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._tick = min(1.0, seconds / 20)
        threading.Thread(target=self._run, daemon=True, name="env-deadlines").start()

    def watch(self, fut: Future, on_due: Callable[[], None]) -> None:
        """Watch `fut` from now; `on_due()` (which settles it) runs if it is still unsettled then."""
        with self._lock:
            self._watched[fut] = (time.monotonic() + self.seconds, on_due)
        fut.add_done_callback(self._forget)

    def close(self) -> None:
        self._stop.set()

    def _forget(self, fut: Future) -> None:
        with self._lock:
            self._watched.pop(fut, None)

    def _run(self) -> None:
        while not self._stop.wait(self._tick):
            now = time.monotonic()
            with self._lock:
                due = [cb for f, (t, cb) in self._watched.items() if t <= now and not f.done()]
            for on_due in due:
                on_due()


def settle(fut: Future, result: Any) -> bool:
    """Set `fut`'s result unless it has one already (a step finishing races its deadline)."""
    try:
        fut.set_result(result)
    except InvalidStateError:
        return False
    return True


def reset_env(env: gym.Env, seed: int | None, options: dict[str, Any] | None, skill_card: bool) -> Reset:
    """Reset `env` and read what the runner needs at the start (run where the env lives)."""
    obs, info = env.reset(seed=seed, options=options)
    card = env.get_wrapper_attr("skill_card")() if skill_card else None
    return Reset(obs, info, overrides_oracle(env), card)


def overrides_oracle(env: gym.Env) -> bool:
    """Whether a wrapper's `oracle_action` overrides the env's own (the env's own is already in
    each step's info, so it is not asked twice)."""
    try:
        fn = env.get_wrapper_attr("oracle_action")
    except AttributeError:
        return False
    return getattr(fn, "__self__", None) is not env.unwrapped


def _safe_step(env: gym.Env, action: str) -> StepResult | str:
    try:
        return env.step(action)
    except BaseException:  # noqa: BLE001 - an ERROR episode, never a silent zero; SystemExit too, or its worker dies
        return traceback.format_exc(limit=5)

"""`RayEnvPool` (``--env-pool ray``): a rollout's envs hosted in a few Ray actors. Ray is an
optional dependency (the ``ray`` extra), imported only here and only when such a pool is made.

Each actor (`EnvWorker`) is a process holding envs by key. It is a threaded actor whose
`max_concurrency` covers every env it hosts, so each env steps on a thread of its own and a slow
tool call never queues another env's step. An env is built where it lives, from the factory
(cloudpickled by Ray, so a closure is fine), at its first reset; the factory's env id must
resolve there: a registered ``agentopd/`` id, ``module:EnvId`` or ``class:pkg.module:Class``
from an importable module (an id that a script registers with `gymnasium.register` exists only
in that script's process). A step past the time limit resolves to the error text; its actor
takes no new envs and is killed once its last env is closed, or at the pool's close, which ends
the hung call. A worker process takes seconds to start, so at close an actor whose envs all
closed is parked for the next pool (the runner makes one per batch) instead of killed;
`stop_workers` kills the parked ones, and Ray kills them all when this process exits.

Ray starts lazily: an initialised Ray, or the cluster at ``RAY_ADDRESS``, is used as it is;
otherwise a local instance starts (`init_ray`).
"""

from __future__ import annotations

import functools
import itertools
import math
import os
import threading
from concurrent.futures import Future
from typing import Any

import gymnasium as gym

from agentopd.rollout.env_pool import (
    RAY_HINT,
    Deadlines,
    EnvFactory,
    EnvHandle,
    EnvPool,
    Reset,
    StepResult,
    _safe_step,
    reset_env,
    settle,
)

CONTROL_THREADS = 2
"""Threads of an actor beyond one per env: resets, oracle calls and closes beside running steps."""


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ImportError(RAY_HINT) from None
    return ray


def init_ray(num_cpus: int | None = None) -> Any:
    """The `ray` module, initialised: as it is when already up, the cluster at ``RAY_ADDRESS``,
    else a local instance with `num_cpus` CPUs (None: this machine's)."""
    ray = import_ray()
    if not ray.is_initialized():
        if os.environ.get("RAY_ADDRESS"):  # an existing cluster: its resources are its own
            ray.init(ignore_reinit_error=True)
        else:
            ray.init(num_cpus=num_cpus, include_dashboard=False, ignore_reinit_error=True)
    return ray


class EnvWorker:
    """The envs of one Ray actor, by key (what Ray hosts; it imports nothing heavy)."""

    def __init__(self) -> None:
        self._envs: dict[int, gym.Env] = {}

    def reset(self, key: int, make_env: EnvFactory, seed: int | None, options: dict[str, Any] | None,
              skill_card: bool) -> Reset:
        env = self._envs.get(key)
        if env is None:
            env = self._envs[key] = make_env()
        return reset_env(env, seed, options, skill_card)

    def step(self, key: int, action: str) -> StepResult | str:
        env = self._envs.get(key)
        return _safe_step(env, action) if env is not None else f"env {key} is not open on this worker"

    def call(self, key: int, name: str, args: tuple[Any, ...]) -> Any:
        return self._envs[key].get_wrapper_attr(name)(*args)

    def close(self, key: int) -> None:
        env = self._envs.pop(key, None)
        if env is not None:
            env.close()

    def close_all(self) -> None:
        errors = []
        for key in list(self._envs):
            try:
                self.close(key)
            except Exception as e:  # noqa: BLE001 - the others still close; the first error is raised
                errors.append(e)
        if errors:
            raise errors[0]

    def ping(self) -> bool:
        return True


class RayEnvPool(EnvPool):
    """Envs in `actors` Ray actors (spread over the cluster's nodes) of at least `threads`
    threads each (one per env an actor hosts, plus `CONTROL_THREADS`); envs go to actors in turn.
    At close, actors whose envs all closed are parked for the next pool (a worker process takes
    seconds to start) and the others are killed; `stop_workers` kills the parked ones."""

    def __init__(self, actors: int = 2, threads: int = 8 + CONTROL_THREADS, step_timeout_s: float = 300.0):
        super().__init__(step_timeout_s)
        self._keys = _KEYS  # unique across pools: a parked actor never mistakes a late close for a new env
        self._ray = init_ray()
        self._threads = max(1, threads)
        parked = _take_parked(self._ray, max(1, actors), self._threads)
        self._actors: list[Any] = [a for a, _ in parked]
        self._sizes = [n for _, n in parked]
        """Each actor's threads (a parked one may have more than this pool asks for)."""
        for _ in range(max(1, actors) - len(parked)):
            self._add_actor()
        self._where: dict[int, int] = {}
        """Env key -> the index of the actor hosting it."""
        self._factories: dict[int, Any] = {}
        """Env key -> its factory's object ref (one `ray.put` per factory)."""
        self._factory: tuple[EnvFactory, Any] | None = None
        self._stuck: set[int] = set()
        """Actors with a step past the limit (a thread of theirs is hung): they take no new envs."""
        self._killed: set[int] = set()
        self._turn = 0
        self._deadlines = Deadlines(step_timeout_s) if step_timeout_s else None
        self._closed = False

    @classmethod
    def for_batch(cls, envs: int, max_actors: int = 8, step_timeout_s: float = 300.0) -> RayEnvPool:
        """A pool for `envs` envs: one actor per CPU of the Ray cluster, at most `max_actors`."""
        ray = init_ray()
        cpus = int(ray.cluster_resources().get("CPU", 1))
        actors = max(1, min(max_actors, cpus, envs or max_actors))
        return cls(actors, math.ceil(max(envs, 1) / actors) + CONTROL_THREADS, step_timeout_s)

    def make(self, make_env: EnvFactory) -> EnvHandle:
        if self._factory is None or self._factory[0] is not make_env:
            try:
                self._factory = (make_env, self._ray.put(make_env))
            except Exception as e:  # noqa: BLE001 - a pickling error, said in one line
                raise ValueError(f"the ray env pool sends make_env to its workers, and it does not pickle: "
                                 f"{type(e).__name__}: {e}") from None
        open_ = [i for i in range(len(self._actors)) if i not in self._stuck]
        if not open_:  # every actor has a hung step: a fresh one takes the new envs
            open_ = [self._add_actor()]
        handle = EnvHandle(self, next(self._keys))
        self._where[handle.key] = open_[self._turn % len(open_)]
        self._factories[handle.key] = self._factory[1]
        self._turn += 1
        return handle

    def reset(self, env: EnvHandle, seed: int | None, options: dict[str, Any] | None = None,
              skill_card: bool = False) -> Reset:
        ref = self._actor(env).reset.remote(env.key, self._factories[env.key], seed, options, skill_card)
        return self._get(ref)

    def submit(self, env: EnvHandle, action: str) -> Future[StepResult | str]:
        out: Future[StepResult | str] = Future()
        ref = self._actor(env).step.remote(env.key, action)
        # The callback holds `ref`, so the result stays alive until it has been read.
        ref.future().add_done_callback(lambda f, _ref=ref: settle(out, _step_result(f)))
        if self._deadlines is not None:  # the actor has a thread per env: a step starts when sent
            self._deadlines.watch(out, functools.partial(self._expire, out, self._where[env.key]))
        return out

    def call(self, env: EnvHandle, name: str, *args: Any) -> Any:
        return self._get(self._actor(env).call.remote(env.key, name, args))

    def view(self, env: EnvHandle) -> EnvHandle:
        return env

    def close_env(self, env: EnvHandle) -> None:
        actor = self._where.pop(env.key, None)
        self._factories.pop(env.key, None)
        if actor is None:
            return
        if actor not in self._stuck:
            self._actors[actor].close.remote(env.key)  # not awaited: `close` waits for them all
        elif actor not in self._where.values():  # a hung actor's last env: end the hung call with it
            self._kill(actor)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        ray = self._ray
        live = [i for i in range(len(self._actors)) if i not in self._stuck and i not in self._killed]
        refs = {self._actors[i].close_all.remote(): i for i in live}
        try:  # envs close where they live (a sandbox's files, a database); one that hangs dies with its actor
            ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=self.step_timeout_s or None) \
                if refs else ([], [])
            errors = []
            for ref in ready:
                try:
                    ray.get(ref)
                except Exception as e:  # noqa: BLE001 - raised below, once every actor is parked or killed
                    errors.append(e)
                    continue
                _park(ray, self._actors[refs[ref]], self._sizes[refs[ref]])
                self._killed.add(refs[ref])  # parked: no longer this pool's to kill
            if errors:
                raise errors[0]  # an env whose close raised says so
        finally:
            for i in range(len(self._actors)):
                self._kill(i)
            if self._deadlines is not None:
                self._deadlines.close()

    def _add_actor(self) -> int:
        remote = self._ray.remote(EnvWorker).options(max_concurrency=self._threads, scheduling_strategy="SPREAD")
        self._actors.append(remote.remote())
        self._sizes.append(self._threads)
        return len(self._actors) - 1

    def _actor(self, env: EnvHandle) -> Any:
        return self._actors[self._where[env.key]]

    def _get(self, ref: Any) -> Any:
        """A control call's result (no time limit, as in the local pool: the first one waits for
        its actor to start; an actor that died raises)."""
        return self._ray.get(ref)

    def _expire(self, out: Future[StepResult | str], actor: int) -> None:
        # Marked first, so a runner that reads the error finds the actor hung (a step that
        # finishes at the last moment leaves it marked: it is killed, not parked; no harm done).
        self._stuck.add(actor)
        settle(out, self.timeout_text())

    def _kill(self, actor: int) -> None:
        if actor not in self._killed:
            self._killed.add(actor)
            self._ray.kill(self._actors[actor], no_restart=True)


_PARKED: dict[tuple[str, str], list[tuple[Any, int]]] = {}
"""Idle healthy actors and their thread counts, by Ray session (a later `ray.init` is another)."""
_PARKED_LOCK = threading.Lock()
_KEYS = itertools.count()


def _session(ray: Any) -> tuple[str, str]:
    ctx = ray.get_runtime_context()
    return ctx.get_job_id(), ctx.get_node_id()


def _park(ray: Any, actor: Any, threads: int) -> None:
    with _PARKED_LOCK:
        _PARKED.setdefault(_session(ray), []).append((actor, threads))


def _take_parked(ray: Any, n: int, threads: int) -> list[tuple[Any, int]]:
    """Up to `n` parked actors with at least `threads` threads, the smallest first (so a small
    batch leaves the big actors to a big one); one that died since is dropped."""
    with _PARKED_LOCK:
        session = _session(ray)
        parked = sorted(_PARKED.get(session, []), key=lambda a: a[1])
        fits = [a for a in parked if a[1] >= threads][:n]
        _PARKED.clear()  # an earlier session's handles are dead
        _PARKED[session] = [a for a in parked if a not in fits]
    alive = []
    for actor, size in fits:
        try:
            ray.get(actor.ping.remote(), timeout=30)
            alive.append((actor, size))
        except Exception:  # noqa: BLE001 - a worker lost with its node: start another
            pass
    return alive


def stop_workers() -> None:
    """Kill the parked env workers of this Ray session (Ray kills them at exit anyway)."""
    ray = import_ray()
    if not ray.is_initialized():
        return
    with _PARKED_LOCK:
        parked = _PARKED.pop(_session(ray), [])
    for actor, _ in parked:
        ray.kill(actor, no_restart=True)


def _step_result(fut: Future) -> StepResult | str:
    """A step's result, or the text of the worker's failure (an actor that died, say)."""
    try:
        return fut.result()
    except Exception as e:  # noqa: BLE001 - becomes this episode's ERROR, never the batch's
        return f"env worker failed: {type(e).__name__}: {e}"

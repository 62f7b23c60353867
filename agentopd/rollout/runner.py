"""One runner for every policy: many episodes advance together, one policy call per turn.

A token policy that can `open` a continuous batch (`HFPolicy`) plays continuously: an episode
whose turn is sampled steps its env at once, in a worker thread, while the other rows keep
decoding, and its next turn joins the batch as soon as the env answers, so no episode waits for
the slowest row of a turn. Otherwise, per turn, every live episode goes to the policy in one
batch (a token policy gets token-id prefixes; a message policy gets messages and its env, and
its text is rendered into the student's tokens), then the envs step in parallel. The envs live
in an `EnvPool` (threads here, or Ray actors: `RolloutConfig.env_pool`), reached through
handles, and a step past the pool's time limit ends only its episode. Either way each
step's info is read as a typed `TurnInfo` and each episode becomes a token-in / token-out
`Episode`. Draws are keyed by (episode, turn), so both schedules draw the same random numbers
(on a real model a near-tie token can still flip, because matmuls over different batch shapes
round differently). The student, the oracle and an API model all play through here.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, wait
from dataclasses import dataclass, field

from agentopd.core.turn_info import TurnInfo
from agentopd.core.types import Episode, StopReason, Task, TurnRecord
from agentopd.inference.sampling import MessagePolicy, MessageState, Policy, Sample, SamplingParams
from agentopd.rollout.env_pool import EnvFactory, EnvHandle, EnvPool, make_env_pool
from agentopd.rollout.render import Conversation, Renderer, make_renderer


@dataclass(frozen=True)
class RolloutConfig:
    """Budgets and sampling for one batch of episodes."""

    sampling: SamplingParams = SamplingParams()
    max_context_tokens: int = 4096
    """Episode token budget: an episode whose prefix cannot fit one more full turn ends with
    ``StopReason.TOKEN_LIMIT`` (truncated). Token policies only: an expert's demonstration is not
    cut by the student's sampling budget."""
    env_workers: int = 8
    """Envs stepping in parallel: threads of the local pool; with ``ray``, at most this many
    actors (one per CPU of the cluster), each stepping its envs on threads of its own."""
    env_pool: str = "threads"
    """Where envs live and step: ``threads`` (this process) or ``ray`` (Ray actors; the ``ray``
    extra). See `agentopd.rollout.env_pool`."""
    env_step_timeout_s: float = 300.0
    """A step running longer ends its episode with ``StopReason.ERROR`` and the rest go on (the
    pool's backstop over the tools' own limits; 0 = none)."""
    continuous: bool = True
    """Continuous batching for policies that support it (see the module docstring)."""
    record_skill_card: bool = False
    """Record each task's skill card at reset (`Episode.skill_card`, for the ``self`` teacher)."""
    stop_repeats: int = 0
    """End an episode (``StopReason.LOOP``) once it has made the same tool call (name and
    arguments) in `stop_repeats` turns (0 = never; held-out evals use 3)."""
    max_student_turns: int = 0
    """End an episode (``StopReason.WINDOW``) after the student's W-th turn (TCOD's f2b window;
    0 = the env's own budget). Replayed turns do not count."""
    renderer: str = "auto"
    """The chat format (`agentopd.rollout.render.make_renderer`): auto detects the tokenizer's
    family and falls back to its HF template."""


@dataclass
class _Live:
    env: EnvHandle
    conv: Conversation
    task_id: str
    seed: int
    key: int
    """The episode's sampler key (`_key(key, turn)`)."""
    overrides_oracle: bool
    """A wrapper overrides the env's oracle: ask it each turn (else the env's info is authoritative)."""
    skill_card: dict | None = None
    turns: list[TurnRecord] = field(default_factory=list)
    reward: float = 0.0
    stop: StopReason | None = None
    success: bool = False
    request_success: tuple[bool, ...] = ()
    error: str | None = None


_RENDERERS: dict[tuple[int, str], tuple[object, Renderer]] = {}


def cached_renderer(tokenizer, name: str = "auto") -> Renderer:
    """`make_renderer` once per (tokenizer, name): its probe check runs once, not per batch."""
    key = (id(tokenizer), name)
    hit = _RENDERERS.get(key)
    if hit is None or hit[0] is not tokenizer:  # an id reused by a new tokenizer is a miss
        hit = _RENDERERS[key] = (tokenizer, make_renderer(tokenizer, name))
    return hit[1]


def run_episodes(
    make_env: EnvFactory,
    policy: Policy,
    tasks: Sequence[Task | str | None],
    seeds: Sequence[int],
    cfg: RolloutConfig = RolloutConfig(),
    env_id: str = "",
    on_turn: Callable[[int, int], None] | None = None,
    tokenizer=None,
    replay: Sequence[int] | None = None,
    keys: Sequence[int] | None = None,
    pool: EnvPool | None = None,
    on_episode: Callable[[int, Episode], None] | None = None,
) -> list[Episode]:
    """Roll out one episode per (task, seed) with `policy`. A message policy needs the student's
    `tokenizer` to render its turns. `on_turn(turns done, episodes live)` runs after each env step
    (lock-step: after each batch of them). `replay[i]`: the env's oracle plays episode i's first
    turns before the policy acts (TCOD b2f); they are history, outside the loss mask. `pool`: an
    open env pool to play in (left open); default: one from `cfg` for this call. Never raises
    for env/tool failures (a step that raises or runs past the pool's time limit): such episodes
    end with ``StopReason.ERROR`` and the error text; an env that breaks the `TurnInfo` contract
    raises. `on_episode(i, episode)` runs once per episode, as soon as episode i has ended (an eval
    writes it then: a killed eval keeps what finished)."""
    is_message = isinstance(policy, MessagePolicy)
    if is_message and tokenizer is None:
        raise ValueError("a message policy needs the student's tokenizer to render its turns")
    tokenizer = tokenizer if is_message else policy.tokenizer  # type: ignore[union-attr]
    renderer = cached_renderer(tokenizer, cfg.renderer)
    live: list[_Live] = []
    keys = list(range(len(tasks))) if keys is None else list(keys)
    if len(keys) != len(tasks) or len(set(keys)) != len(keys):
        raise ValueError("run_episodes: keys must be one distinct key per task")
    own = pool is None
    if pool is None:
        pool = make_env_pool(cfg.env_pool, cfg.env_workers, cfg.env_step_timeout_s, len(tasks))
    envs: list[EnvHandle] = []
    ended: dict[int, Episode] = {}
    if on_episode is not None:
        report = _reporter(live, ended, on_episode, env_id)
        on_turn = _then(report, on_turn)
    try:
        for i, (task, seed) in enumerate(zip(tasks, seeds, strict=True)):
            envs.append(pool.make(make_env))
            live.append(_start(envs[-1], renderer, task, seed, cfg, keys[i]))
            if replay is not None and replay[i] > 0:
                _replay_oracle(live[-1], replay[i], renderer, cfg)
        if not is_message and cfg.continuous and hasattr(policy, "open"):
            _play_continuous(policy, live, cfg, on_turn)
        else:
            _play_lockstep(policy, live, cfg, pool, on_turn, renderer, is_message)
    finally:
        try:
            for env in envs:
                env.close()
        finally:
            if own:
                pool.close()
    if on_episode is not None:
        report()  # episodes that never sampled (no turn fit the context) end here
    return [ended.get(i) or _finish(ep, env_id) for i, ep in enumerate(live)]


def _reporter(live: list[_Live], ended: dict[int, Episode], on_episode: Callable[[int, Episode], None],
              env_id: str) -> Callable[[], None]:
    """Hands every newly ended episode to `on_episode`, once."""
    def report() -> None:
        for i, ep in enumerate(live):
            if ep.stop is not None and i not in ended:
                ended[i] = _finish(ep, env_id)
                on_episode(i, ended[i])
    return report


def _then(first: Callable[[], None], on_turn: Callable[[int, int], None] | None) -> Callable[[int, int], None]:
    """An on_turn hook that runs `first` before `on_turn`: both play loops call it after each env
    step, which is where episodes end."""
    def hook(turns: int, n_live: int) -> None:
        first()
        if on_turn is not None:
            on_turn(turns, n_live)
    return hook


def _key(i: int, turn: int) -> int:
    """The sampler key of episode i's turn: its draws depend on nothing else."""
    return (i << 20) | turn


def _fits(ep: _Live, cfg: RolloutConfig) -> bool:
    """Whether one more full turn fits the episode's token budget (else it ends, truncated)."""
    if len(ep.conv.token_ids) + cfg.sampling.max_new_tokens > cfg.max_context_tokens:
        ep.stop = StopReason.TOKEN_LIMIT
        return False
    return True


def _play_lockstep(policy, live: list[_Live], cfg: RolloutConfig, pool: EnvPool, on_turn, renderer,
                   is_message: bool) -> None:
    turn = done = 0
    while True:
        active = [(i, ep) for i, ep in enumerate(live) if ep.stop is None and (is_message or _fits(ep, cfg))]
        if not active:
            break
        if is_message:  # the env gets the policy's exact text; the student's tokens render it
            params = SamplingParams(**{**cfg.sampling.__dict__, "seed": cfg.sampling.seed * 1000 + turn})
            texts = policy.respond([MessageState(tuple(ep.conv.messages), ep.env.view()) for _, ep in active], params)
            samples = [_rendered(renderer, t) for t in texts]
        else:
            samples = policy.sample([ep.conv.token_ids for _, ep in active], cfg.sampling,
                                    keys=[_key(ep.key, len(ep.turns)) for _, ep in active])
        experts = [ep.env.oracle_action() if ep.overrides_oracle else None for _, ep in active]
        spans = [ep.conv.add_assistant(s.token_ids, s.logprobs) for (_, ep), s in zip(active, samples)]
        actions = texts if is_message else [sp[2] for sp in spans]
        results = pool.step([ep.env for _, ep in active], actions)
        for (_, ep), s, span, res, expert in zip(active, samples, spans, results, experts):
            _record(ep, s, span, res, expert, cfg)
        turn += 1
        done += len(active)
        if on_turn is not None:
            on_turn(done, sum(ep.stop is None for ep in live))


def _play_continuous(policy, live: list[_Live], cfg: RolloutConfig, on_turn) -> None:
    stepping: dict = {}  # env future -> (episode index, sample, span, expert action)
    turns = 0
    by_key = {ep.key: i for i, ep in enumerate(live)}
    with policy.open(cfg.sampling) as gen:
        # an episode's next turn goes ahead of episodes not yet started (its history is in the
        # prefix cache now), where the generation takes `urgent` (a user's own may not)
        ahead = {"urgent": True} if "urgent" in inspect.signature(gen.submit).parameters else {}
        # and a slot a turn frees is kept for that episode while its env steps, not given to a new one
        holds = "hold" in inspect.signature(gen.step).parameters
        for ep in live:
            if _fits(ep, cfg):
                gen.submit(ep.conv.token_ids, _key(ep.key, 0))
        while gen.busy or stepping:
            if gen.busy:
                for key, s in gen.step(hold=len(stepping)) if holds else gen.step():
                    i = by_key[key >> 20]
                    ep = live[i]
                    expert = ep.env.oracle_action() if ep.overrides_oracle else None  # before the env moves
                    span = ep.conv.add_assistant(s.token_ids, s.logprobs)
                    stepping[ep.env.submit(span[2])] = (i, s, span, expert)
                done = [f for f in stepping if f.done()]
                if not done and stepping and not getattr(gen, "live", 1):  # every free slot is held: wait for an env
                    done = list(wait(stepping, return_when=FIRST_COMPLETED).done)
            else:
                done = list(wait(stepping, return_when=FIRST_COMPLETED).done)
            for f in done:
                i, s, span, expert = stepping.pop(f)
                ep = live[i]
                _record(ep, s, span, f.result(), expert, cfg)
                if ep.stop is None and _fits(ep, cfg):
                    gen.submit(ep.conv.token_ids, _key(ep.key, len(ep.turns)), **ahead)
                turns += 1
                if on_turn is not None:
                    on_turn(turns, sum(e.stop is None for e in live))


def _replay_oracle(ep: _Live, k: int, renderer: Renderer, cfg: RolloutConfig) -> None:
    """The env's oracle plays the episode's first `k` turns (in the student's tokens, untrained)."""
    for _ in range(k):
        if ep.stop is not None:
            return
        text = ep.env.oracle_action()
        s = _rendered(renderer, text)
        span = ep.conv.add_assistant(s.token_ids, s.logprobs, trained=False)
        res = ep.env.submit(text).result()  # an env failure ends this episode only
        _record(ep, s, span, res, text, cfg, replayed=True)


def _call_key(c) -> tuple:
    return c.name, json.dumps(c.arguments, sort_keys=True, default=str), c.raw if c.parse_error else ""


def _repeats(turns: Sequence[TurnRecord], n: int) -> bool:
    """Whether the last turn made a tool call that the episode has now made `n` times."""
    last = {_call_key(c) for c in turns[-1].tool_calls}
    if not last:
        return False
    seen: dict[tuple, int] = {}
    for t in turns:
        for key in {_call_key(c) for c in t.tool_calls}:
            seen[key] = seen.get(key, 0) + 1
    return any(seen[k] >= n for k in last)


def _record(ep: _Live, s: Sample, span: tuple[int, int, str], res, expert: str | None, cfg: RolloutConfig,
            replayed: bool = False) -> None:
    """Fold one env step into its live episode: a TurnRecord, the stop, the next observation."""
    start, end, text = span
    if isinstance(res, str):  # infrastructure failure inside the env
        ep.stop, ep.error = StopReason.ERROR, res
        return
    obs, reward, terminated, truncated, info = res
    ti = TurnInfo.from_info(info, terminated)
    ep.reward += float(reward)
    ep.turns.append(TurnRecord(
        index=len(ep.turns), start=start, end=end, text=text, tool_calls=ti.tool_calls,
        tool_results=ti.tool_results, request_index=ti.request_index, oracle_ok=ti.oracle_ok,
        reward=float(reward), finish_reason=s.finish_reason,
        oracle_action=expert if ep.overrides_oracle or replayed else ti.oracle_action, replayed=replayed,
    ))
    ep.request_success = ti.request_success
    n = cfg.stop_repeats
    if terminated:
        ep.stop, ep.success = ti.stop_reason or StopReason.DONE, bool(ti.success)
    elif truncated:
        ep.stop = StopReason.TURN_LIMIT
    elif n and len(ep.turns) >= n and _repeats(ep.turns, n):
        ep.stop = StopReason.LOOP
    elif cfg.max_student_turns and sum(not t.replayed for t in ep.turns) >= cfg.max_student_turns:
        ep.stop = StopReason.WINDOW
    else:
        ep.conv.add_observation(obs)


def _start(env: EnvHandle, renderer: Renderer, task: Task | str | None, seed: int, cfg: RolloutConfig,
           key: int) -> _Live:
    r = env.reset(seed, {"task": task} if task is not None else None, cfg.record_skill_card)
    return _Live(env, Conversation.start(renderer, r.obs), r.info["task_id"], seed, key, r.overrides_oracle,
                 r.skill_card)


def _rendered(renderer: Renderer, text: str) -> Sample:
    """A message policy's turn as the student's tokens: canonical ids plus the format's end-of-turn token."""
    ids = renderer.encode(text) + [renderer.eos_token_id]
    return Sample(tuple(ids), (0.0,) * len(ids), "stop")


def _finish(ep: _Live, env_id: str) -> Episode:
    c = ep.conv
    return Episode(
        env_id=env_id, task_id=ep.task_id, seed=ep.seed,
        token_ids=tuple(c.token_ids), logprobs=tuple(c.logprobs), loss_mask=tuple(c.loss_mask),
        turns=tuple(ep.turns), messages=tuple(c.messages), reward=ep.reward,
        success=ep.success and ep.stop == StopReason.DONE,
        stop_reason=ep.stop or StopReason.ERROR, request_success=ep.request_success, error=ep.error,
        skill_card=ep.skill_card,
    )

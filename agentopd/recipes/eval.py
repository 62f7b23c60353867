"""`agentopd eval`: benchmark an agent on a released task split."""

from __future__ import annotations

import functools
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from agentopd.core.types import Episode
from agentopd.envs.registry import env_attr, make_env, resolve_env_id
from agentopd.inference.models import check_model_name, parse_spec
from agentopd.inference.sampling import Policy, SamplingParams
from agentopd.metrics.episodes import pass_at_k_by_task, per_turn_success, summarize, task_counts
from agentopd.rollout.env_pool import check_env_pool, make_env_pool
from agentopd.rollout.render import RENDERERS
from agentopd.rollout.runner import RolloutConfig, cached_renderer, run_episodes
from agentopd.tools.formats import FORMATS

OPEN_ENVS = 256
"""Episodes (and so envs) one run_episodes call of an eval holds open at most."""


@dataclass(frozen=True)
class EvalConfig:
    """Options of `agentopd eval`."""

    env: str
    """Env id (``agentopd/Calc-v0``) or entry point (``pkg.module:Class``)."""
    model: str = "hf:smollm2-135m"
    """Model spec: ``hf:<name-or-path>`` or ``oracle``."""
    split: str = "test"
    n: int | None = None
    """Number of tasks (the first n of the split); default: all."""
    seed: int = 0
    out: str | None = None
    """Directory for ``episodes.jsonl`` and ``summary.json``."""
    temperature: float = 0.0
    max_new_tokens: int = 256
    max_context_tokens: int = 4096
    batch_size: int = 64
    """Rows the sampler keeps live; a finished row's place goes to the next waiting turn. 64 ran a
    100-task calc eval 1.3x faster than 32 on a 2-core CPU, and as fast as 100 (RESULTS.md)."""
    continuous_batching: bool = True
    """An episode's next turn joins the batch as soon as its env answers."""
    stop_repeats: int = 3
    """End an episode once it has made the same tool call K times (stop reason ``loop``); 0 = never."""
    device: str = "cpu"
    dtype: str = "auto"
    """Compute dtype: auto (bf16 on CUDA and on a CPU with native bf16 units where it measures
    faster; fp32 otherwise), float32 or bfloat16."""
    sandbox: str = "auto"
    """auto | strict (refuse to run model-written code without namespaces)."""
    tokenizer: str = "hf:smollm2-135m"
    """For ``oracle``: the student whose tokens the expert's turns are rendered in (episodes.jsonl)."""
    k: int = 1
    """pass@k: the unbiased estimate (Chen et al. 2021) that one of k samples of a task succeeds."""
    samples: int = 0
    """Samples (episodes) per task, >= k; 0 = k. More than k lowers the variance of pass@k."""
    renderer: str = "auto"
    """Chat format: auto (the tokenizer's family, else its HF template), qwen3, qwen3-nothink,
    qwen2.5, llama3, smollm, chatml or hf."""
    tool_format: str = "hermes"
    """How the env asks for and parses tool calls: hermes (<tool_call> JSON) or llama3_json."""
    env_pool: str = "threads"
    """Where envs live and step: threads (this process) or ray (Ray actors; the ray extra)."""
    env_step_timeout: float = 300.0
    """Seconds an env step may take before its episode ends with stop reason error (0 = none)."""
    resume: bool = False
    """Continue the unfinished eval in `out`: its finished episodes are kept and only the rest are
    played, with the same draws (the same tokens as one uninterrupted eval; a logprob may differ by
    float noise, as the rows batched with it differ)."""

    @property
    def samples_per_task(self) -> int:
        return self.samples or self.k

    def _greedy_repeats(self) -> str:
        """Why several samples of a task at temperature 0 are refused: greedy copies are identical."""
        flags = f"--k {self.k}" + (f" --samples {self.samples}" if self.samples else "")
        return (f"{flags} samples each task {self.samples_per_task} times: set --temperature > 0 (e.g. 1.0), "
                f"or use --k 1{' without --samples' if self.samples else ''} for greedy pass@1")


    def validate(self) -> None:
        """One-line errors before any model loads (``--n 0`` once exited 0 having done nothing)."""
        for ok, msg in (
            (self.split in ("train", "test"), f"split {self.split!r}: use train or test"),
            (self.sandbox in ("auto", "strict"), f"sandbox {self.sandbox!r}: use auto or strict"),
            (self.dtype in ("auto", "float32", "bfloat16"), f"dtype {self.dtype!r}: use auto, float32 or bfloat16"),
            (self.n is None or self.n >= 1, "n must be >= 1 (omit it for the whole split)"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.stop_repeats >= 0, "stop_repeats must be >= 0 (0 = never stop a repeating episode)"),
            (self.temperature >= 0, "temperature must be >= 0 (0 = greedy)"),
            (self.max_new_tokens >= 1, "max_new_tokens must be >= 1"),
            (self.max_context_tokens > self.max_new_tokens, "max_context_tokens must exceed max_new_tokens"),
            (self.k >= 1, "k must be >= 1 (pass@k over k samples of each task; 1 = pass@1)"),
            (self.samples == 0 or self.samples >= self.k,
             f"samples must be >= k: pass@{self.k} needs at least {self.k} samples of each task "
             f"(use --samples {self.k} or more, or omit it for {self.k})"),
            (self.samples_per_task == 1 or self.temperature > 0, self._greedy_repeats()),
            (self.renderer == "auto" or self.renderer in RENDERERS,
             f"renderer {self.renderer!r}: use auto, {', '.join(RENDERERS)}"),
            (self.tool_format in FORMATS, f"tool_format {self.tool_format!r}: use {', '.join(FORMATS)}"),
            (self.env_step_timeout >= 0, "env_step_timeout must be >= 0 (0 = no limit)"),
        ):
            if not ok:
                raise ValueError(msg)
        check_env_pool(self.env_pool)
        resolve_env_id(self.env)
        if self.model != "oracle":
            spec = parse_spec(self.model)
            if spec.backend in ("hf", "vllm"):
                check_model_name(spec.name)


def run_eval(cfg: EvalConfig, console: Console | None = None) -> tuple[dict[str, float], list[Episode]]:
    console = console or Console()
    cfg.validate()
    from agentopd.recipes.common import require_sandbox

    require_sandbox(cfg.sandbox)
    t0 = time.time()
    out = Path(cfg.out) if cfg.out else None
    if cfg.resume and out is None:
        raise ValueError("--resume continues the eval in --out: give --out")
    if out is not None:  # before the rollouts: a bad path must not waste the evaluation
        if out.exists() and not out.is_dir():
            raise ValueError(f"--out {cfg.out} is a file: choose a directory")
        out.mkdir(parents=True, exist_ok=True)
        if not os.access(out, os.W_OK):
            raise ValueError(f"--out {cfg.out} is not writable")
    env_kw = {"tool_format": cfg.tool_format} if cfg.tool_format != "hermes" else {}
    env = make_env(cfg.env, split=cfg.split, **env_kw)
    tasks = list(env_attr(env, "tasks"))
    env.close()
    if cfg.n is not None:
        tasks = tasks[: cfg.n]
    # Task-major: the `per` copies of a task lie side by side and share run_episodes calls.
    # Copy 0 of task i keeps env seed seed + i (so --k 1 is unchanged); copy j gets seed + i + j * tasks.
    per = cfg.samples_per_task
    ids = [t.id for t in tasks for _ in range(per)]
    seeds = [cfg.seed + i + j * len(tasks) for i in range(len(tasks)) for j in range(per)]
    make = functools.partial(make_env, cfg.env, split=cfg.split, **env_kw)  # plain values: a Ray pool pickles it
    kept = _kept_episodes(cfg, out, {(ids[i], seeds[i]): i for i in range(len(ids))}) if out is not None else {}
    todo = [i for i in range(len(ids)) if i not in kept]
    policy, tokenizer = _policy(cfg) if todo else (None, None)
    sink = _open_sink(cfg, out, kept) if out is not None else None  # once the model loaded: nothing to resume before
    if todo:
        episodes = _play(cfg, make, policy, tokenizer, ids, seeds, todo, kept, sink, console)
    else:
        episodes = [kept[i] for i in range(len(ids))]
    summary = summarize(episodes)
    summary["eval/samples_per_task"] = float(per)
    summary["eval/pass@1"] = pass_at_k_by_task(episodes, 1)
    summary[f"eval/pass@{cfg.k}"] = pass_at_k_by_task(episodes, cfg.k)
    summary["eval/seconds"] = time.time() - t0  # this process's: a resumed eval's own part
    if cfg.resume:
        summary["eval/episodes_resumed"] = float(len(kept))
    if out is not None and sink is not None:
        sink.close()
        tmp = out / (EPISODES + ".tmp")  # in eval order, replacing the file written as episodes ended
        with tmp.open("w") as f:
            f.writelines(map(_line, episodes))
        tmp.replace(out / EPISODES)
        # per task (samples, successes): exact intervals and paired comparisons without the episodes
        counts = {t: list(nc) for t, nc in task_counts(episodes).items()}
        (out / "summary.json").write_text(json.dumps({"config": asdict(cfg), "metrics": summary, "tasks": counts},
                                                     indent=2))
    print_summary(console, cfg, summary, episodes)
    return summary, episodes


EPISODES = "episodes.jsonl"
STATE = "eval_config.json"
"""The config an unfinished eval in --out runs under, checked by --resume."""
FREE = ("out", "resume", "batch_size", "env_pool", "env_step_timeout", "sandbox", "device")
"""Config fields a resumed eval may change: they do not change which episodes it plays (draws are
keyed by episode and turn, not by batch)."""


def _kept_episodes(cfg: EvalConfig, out: Path, index: dict[tuple[str, int], int]) -> dict[int, Episode]:
    """The finished episodes an eval in `out` left, by eval index (--resume); {} for a fresh eval.
    An unfinished eval there is never overwritten without --resume."""
    path, state = out / EPISODES, out / STATE
    unfinished = state.exists() and not (out / "summary.json").exists()
    if not cfg.resume:
        if unfinished:
            n = sum(1 for _ in path.open()) if path.exists() else 0
            raise ValueError(f"--out {cfg.out} holds an unfinished eval ({n} episodes written): add --resume to "
                             "continue it, or choose another --out")
        return {}
    if not state.exists():
        if path.exists():
            raise ValueError(f"--out {cfg.out} has {EPISODES} but no {STATE} (an eval that --resume cannot "
                             "check): choose another --out, or remove them")
        return {}
    try:
        saved = json.loads(state.read_text())
    except ValueError:
        raise ValueError(f"{state} is not valid JSON: remove it to start the eval afresh") from None
    now = asdict(cfg)
    differ = sorted(k for k in now if k not in FREE and saved.get(k) != now[k])
    if differ:
        was = ", ".join(f"{k}={saved.get(k)!r} (now {now[k]!r})" for k in differ)
        raise ValueError(f"--resume: the eval in --out {cfg.out} ran with {was}; use the same options, "
                         "or another --out")
    kept: dict[int, Episode] = {}
    for line in path.open() if path.exists() else ():
        try:
            ep = Episode.from_json(json.loads(line))
        except (ValueError, KeyError, TypeError):
            continue  # the line a kill cut short
        i = index.get((ep.task_id, ep.seed))
        if i is None:
            raise ValueError(f"--resume: {path} holds an episode of task {ep.task_id} seed {ep.seed}, which "
                             "this eval does not play: use another --out")
        kept[i] = ep
    return kept


def _open_sink(cfg: EvalConfig, out: Path, kept: dict[int, Episode]):
    """episodes.jsonl, rewritten with the kept episodes (dropping a line cut short), open to append."""
    (out / "summary.json").unlink(missing_ok=True)
    (out / STATE).write_text(json.dumps(asdict(cfg), indent=2))
    f = (out / EPISODES).open("w")
    f.writelines(_line(kept[i]) for i in sorted(kept))
    f.flush()
    return f


def _line(ep: Episode) -> str:
    return json.dumps(ep.to_json()) + "\n"


def _append(f, ep: Episode) -> None:
    """One finished episode, on disk before the next one ends."""
    f.write(_line(ep))
    f.flush()


def _play(cfg: EvalConfig, make, policy, tokenizer, ids: list[str], seeds: list[int], todo: list[int],
          kept: dict[int, Episode], sink, console: Console) -> list[Episode]:
    """Play the episodes `todo` (eval indices), append each to `sink` as it ends; all, in eval order."""
    per = cfg.samples_per_task
    renderer = cached_renderer(tokenizer if tokenizer is not None else policy.tokenizer, cfg.renderer)  # type: ignore[union-attr]
    if hasattr(policy, "stop_token_ids"):  # the format's ends of turn (Llama's <|eom_id|>), not only the eos
        policy.stop_token_ids = sorted(set(policy.stop_token_ids) | set(renderer.stop_token_ids))
    rcfg = RolloutConfig(SamplingParams(cfg.max_new_tokens, cfg.temperature, seed=cfg.seed),
                         max_context_tokens=cfg.max_context_tokens, continuous=cfg.continuous_batching,
                         stop_repeats=cfg.stop_repeats, renderer=cfg.renderer, env_pool=cfg.env_pool,
                         env_step_timeout_s=cfg.env_step_timeout)
    done = dict(kept)
    # One run_episodes call plays up to OPEN_ENVS episodes: the sampler keeps batch_size rows live
    # and admits a waiting turn whenever a row finishes, so no batch waits for its slowest episode
    # (chunks of batch_size did, and the last chunk ran nearly empty). The calls only bound how many
    # envs are open at once. Draws are keyed by (seed, the episode's index in the whole eval, turn):
    # the episodes do not depend on batch_size or on the calls, and a task's copies differ.
    span = max(cfg.batch_size, OPEN_ENVS)
    # One env pool for every call: Ray actors start once.
    pool = make_env_pool(rcfg.env_pool, rcfg.env_workers, rcfg.env_step_timeout_s, min(cfg.batch_size, len(todo)))
    with pool, Progress(TextColumn("[bold]eval[/] {task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=console, transient=False) as bar:
        job = bar.add_task(f"{cfg.env} {cfg.model}" + (f" x{per} samples" if per > 1 else ""), total=len(ids),
                           completed=len(kept))
        for c in range(0, len(todo), span):
            part = todo[c:c + span]

            def ended(j: int, ep: Episode, part=part) -> None:
                done[part[j]] = ep
                if sink is not None:
                    _append(sink, ep)
                bar.update(job, completed=len(done))

            run_episodes(make, policy, [ids[i] for i in part], [seeds[i] for i in part], rcfg, cfg.env, None,
                         tokenizer, keys=part, pool=pool, on_episode=ended)
    return [done[i] for i in range(len(ids))]


def _policy(cfg: EvalConfig) -> tuple[Policy, object]:
    """The agent of `cfg.model`, and the tokenizer a message policy's turns render in."""
    if cfg.model == "oracle":
        from agentopd.inference.models import load_tokenizer, parse_spec
        from agentopd.rollout.oracle import OraclePolicy

        return OraclePolicy(), load_tokenizer(parse_spec(cfg.tokenizer).name)
    from agentopd.inference.factory import make_token_policy

    try:
        return make_token_policy(cfg.model, device=cfg.device, max_batch=cfg.batch_size, dtype=cfg.dtype), None
    except OSError as e:
        raise ValueError(f"cannot load the model {cfg.model!r}: {str(e).splitlines()[0]}") from None


def print_summary(console: Console, cfg: EvalConfig, summary: dict[str, float], episodes: list[Episode]) -> None:
    per = int(summary.get("eval/samples_per_task", 1))
    shape = f" ({len({e.task_id for e in episodes})} tasks x {per} samples)" if per > 1 else ""
    table = Table(title=f"{cfg.env} | {cfg.model} | {cfg.split} split | {len(episodes)} episodes{shape}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("success rate", f"{summary['eval/success']:.3f}")
    for kk in sorted({1, cfg.k}):
        if f"eval/pass@{kk}" in summary:
            table.add_row(f"pass@{kk}", f"{summary[f'eval/pass@{kk}']:.3f}")
    table.add_row("samples / task", f"{per}")
    table.add_row("tool-error rate", f"{summary['tool/error_rate']:.3f}")
    table.add_row("tool calls / episode", f"{summary['tool/calls_per_episode']:.2f}")
    table.add_row("mean turns", f"{summary['eval/mean_turns']:.2f}")
    table.add_row("infra errors", f"{int(summary['eval/infra_errors'])}")
    for k, v in sorted(summary.items()):
        if k.startswith("stop/"):
            table.add_row(k, f"{v:.3f}")
    console.print(table)
    curve = per_turn_success(episodes)
    console.print("per-turn success (still on track after turn t): "
                  + "  ".join(f"t{t}={v:.2f}" for t, v in enumerate(curve)))

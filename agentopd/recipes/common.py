"""What every training recipe shares: the run directory, the student, its teacher and learner,
the envs and task sampler, held-out evals, metrics and checkpoints. The recipes keep the loop."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import resource
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from agentopd.core.config import UserError
from agentopd.core.rows import TrainRow
from agentopd.core.types import Episode, StopReason
from agentopd.envs.registry import env_attr, make_env, resolve_env_id
from agentopd.inference.hf import HFPolicy
from agentopd.inference.models import check_model_name, load_causal_lm, load_tokenizer, parse_spec
from agentopd.inference.openai_client import ServedError
from agentopd.inference.sampling import Policy, SamplingParams
from agentopd.inference.vllm import INSTALL_HINT, VLLMPolicy, vllm_available
from agentopd.metrics.episodes import eval_metrics
from agentopd.metrics.sinks import MetricsLogger, repair_metrics
from agentopd.recipes.config import TrainConfig
from agentopd.rollout.oracle import OraclePolicy
from agentopd.rollout.render import RenderError
from agentopd.rollout.runner import RolloutConfig, cached_renderer, run_episodes
from agentopd.rollout.tasks import (
    BackwardReplay,
    ForwardWindow,
    KLWindow,
    TaskBatch,
    TaskSampler,
    UniformTasks,
)
from agentopd.teachers.base import TeacherError
from agentopd.teachers.check import identical_signal
from agentopd.teachers.factory import build_teacher
from agentopd.tools.formats import FORMATS
from agentopd.training import distributed
from agentopd.training.checkpoint import find_checkpoint, has_checkpoints
from agentopd.training.distributed import SINGLE, World
from agentopd.training.learner import Learner


@dataclass
class Run:
    """One training run's live parts."""

    cfg: TrainConfig
    dir: Path
    console: Console
    tokenizer: Any
    policy: HFPolicy | VLLMPolicy
    """The student as a sampler: its model is the learner's (hf), or a copy of its own that
    `sync_policy` refreshes after every optimizer step (vLLM's engine; the hf sampler of a
    sharded learner or of overlapped rollouts, `HFPolicy.detached`)."""
    teacher: Any
    """A `agentopd.teachers.base.Teacher`."""
    learner: Learner
    tasks: TaskSampler
    test_ids: list[str]
    logger: MetricsLogger | NullLogger
    last: dict[str, float] = dataclasses.field(default_factory=dict)

    # ---- episodes ---------------------------------------------------------------------
    @property
    def make_train(self):
        """Makes a training-split env, with the `max_turns` cap when one is set: a picklable
        factory, not a bound method, so a Ray env pool ships it without the run."""
        return train_env_factory(self.cfg)

    def play(self, policy: Policy, batch: TaskBatch, step: int) -> list[Episode]:
        """Training episodes of `batch` played by `policy` (under the batch's curriculum plan:
        a turn window, oracle replays); infrastructure errors are dropped. Under torchrun, this
        rank's slice of them (`distributed.slice_of`), drawn under their global indices."""
        cfg = self.cfg
        rollout = RolloutConfig(SamplingParams(cfg.max_new_tokens, cfg.temperature, seed=cfg.seed * 7919 + step),
                                cfg.max_context_tokens, record_skill_card=self.teacher.needs_skill_card,
                                continuous=cfg.continuous_batching, max_student_turns=batch.window,
                                renderer=cfg.renderer, env_pool=cfg.env_pool, env_step_timeout_s=cfg.env_step_timeout)
        mine = distributed.slice_of(len(batch.task_ids), self.world)
        episodes = run_episodes(self.make_train, policy, [batch.task_ids[i] for i in mine],
                                [batch.seeds[i] for i in mine], rollout, cfg.env, tokenizer=self.tokenizer,
                                replay=None if batch.replay is None else [batch.replay[i] for i in mine], keys=mine)
        self.policy.invalidate()  # cached keys/values go stale at this step's update: free them now
        return [e for e in episodes if e.stop_reason != StopReason.ERROR]  # infra errors never train

    def sync_policy(self) -> dict[str, float]:
        """After each optimizer step: the learner's new weights into the student's sampler when
        it holds a copy of its own (`WeightReceiver`: vLLM's engine in place; a detached hf
        sampler), a sharded learner's one gathered parameter at a time; nothing for the hf
        student that samples from the learner's model itself. Returns ``time/sync_s``."""
        if not getattr(self.policy, "owns_weights", False):
            return {}
        if isinstance(self.policy, VLLMPolicy) and not self.world.distributed:
            return {"time/sync_s": self.policy.load_weights(self.learner.model)}  # state_dict names, tied head too
        return {"time/sync_s": self.policy.load_weights(distributed.full_parameters(self.learner.model))}

    @property
    def scorer(self):
        """The student's weights as a plain module for no-grad scoring (TIP's entropies, the
        G-OPD reference): the learner's own, or under FSDP the sampler's synced full copy."""
        return self.policy.model if self.world.distributed else self.learner.model

    def merged(self, episodes: list[Episode], rows: list[TrainRow]) -> tuple[list[Episode], list[TrainRow]]:
        """Every rank's episodes and rows (the rows' sampled-token signal only), for metrics and
        curricula that must see the whole step; this process's own when it is alone."""
        if not self.world.distributed:
            return episodes, rows
        light = [dataclasses.replace(r, signal=None if r.signal is None else dataclasses.replace(
            r.signal, topk_ids=None, topk_logp=None, target_logp=None)) for r in rows]
        return distributed.gather(episodes, self.world), distributed.gather(light, self.world)

    def expert_turns(self, task_ids) -> list[int]:
        """How many turns the env's oracle takes on each training task (cached; TCOD b2f)."""
        todo = [t for t in dict.fromkeys(task_ids) if t not in self._expert_turns]
        if todo:
            eps = run_episodes(self.make_train, OraclePolicy(), todo, [0] * len(todo),
                               RolloutConfig(max_context_tokens=10**9, renderer=self.cfg.renderer,
                                             env_pool=self.cfg.env_pool, env_step_timeout_s=self.cfg.env_step_timeout),
                               self.cfg.env,
                               tokenizer=self.tokenizer)
            self._expert_turns |= {t: max(1, e.num_turns) for t, e in zip(todo, eps)}
        return [self._expert_turns[t] for t in task_ids]

    def warm_expert(self) -> Policy:
        """Who plays the warm start's demonstrations."""
        return OraclePolicy() if self.cfg.warm_start_from == "oracle" else self.teacher_policy()

    def teacher_policy(self) -> HFPolicy:
        """The teacher model as a sampler (GKD's teacher-generated fraction, SFT demos)."""
        return HFPolicy(self.teacher.model, self.tokenizer, dtype=self.policy.dtype,
                        stop_token_ids=self.policy.stop_token_ids)

    def reference(self):
        """G-OPD's reference policy pi_ref as a scorer of sampled tokens: ``--gopd-ref hf:<model>``,
        or the student as the method starts (its initial weights without a warm start; after one,
        the weights at the boundary, saved to RUN/gopd_ref so a resumed run scores against the same)."""
        if self._reference is None:
            from agentopd.teachers.local import HFTeacher, LogitTeacher

            cfg = self.cfg
            if cfg.gopd_ref.startswith("hf:"):
                src = parse_spec(cfg.gopd_ref).name
            elif cfg.warm_start_steps == 0:
                src = parse_spec(cfg.student).name
            else:
                saved = self.dir / "gopd_ref"
                if not (saved / "config.json").exists():
                    if self.learner.step_count != cfg.warm_start_steps:
                        raise UserError(f"{saved} is missing: the reference is saved when the method starts "
                                        "(after the warm start); start this run again without --resume")
                    if self.world.main:
                        self.scorer.save_pretrained(saved)
                    distributed.barrier(self.world)
                src = str(saved)
            model = _load("reference model", load_causal_lm, src, device=cfg.teacher_device or cfg.device,
                          dtype="float32").eval()
            ref = (HFTeacher(model, load_tokenizer(src), self.tokenizer, max_tokens=cfg.micro_tokens())
                   if cfg.gopd_ref.startswith("hf:") else LogitTeacher(model, self.tokenizer, cfg.micro_tokens()))
            ref.autocast = cfg.compute_dtype() == "bfloat16"
            self._reference = ref
        return self._reference

    def evaluate(self) -> dict[str, float]:
        """Held-out success and per-turn success on the first `eval_n` test tasks (greedy by default)."""
        cfg = self.cfg
        rollout = RolloutConfig(SamplingParams(cfg.max_new_tokens, cfg.eval_temperature, seed=cfg.seed),
                                cfg.max_context_tokens, continuous=cfg.continuous_batching,
                                stop_repeats=cfg.eval_stop_repeats, renderer=cfg.renderer, env_pool=cfg.env_pool,
                                env_step_timeout_s=cfg.env_step_timeout)
        mine = distributed.slice_of(len(self.test_ids), self.world)  # each rank its share of the tasks
        eps = run_episodes(functools.partial(make_env, cfg.env, split="test", **cfg.env_kwargs()), self.policy,
                           [self.test_ids[i] for i in mine], mine, rollout, cfg.env, keys=mine)
        return eval_metrics(distributed.gather(eps, self.world))

    # ---- checks -----------------------------------------------------------------------
    def require_targets(self, rows: list[TrainRow], step: int) -> None:
        if not rows or sum(r.n_targets for r in rows) == 0:
            raise RuntimeError(f"step {step}: no training targets (every episode failed or was empty)")

    def warn_if_zero_signal(self, rows: list[TrainRow], step: int) -> None:
        if step == self.start_step and identical_signal(rows):
            self.console.print("[yellow]warning:[/] the teacher gives exactly the student's logprobs "
                               "on every token: the distillation signal is zero")

    # ---- the loop ---------------------------------------------------------------------
    def warming(self, step: int) -> bool:
        """Whether `step` belongs to the warm start (SFT before the method)."""
        return step < self.cfg.warm_start_steps

    @contextmanager
    def steps(self) -> Iterator[Iterator[int]]:
        """The remaining step indices (warm start first, then the method's), under a progress
        bar; a baseline eval first."""
        cfg = self.cfg
        self.start_step = self.learner.step_count
        if cfg.eval_every and cfg.eval_at_start and self.start_step == 0:
            self.logger.log(0, self.evaluate())  # the starting point, for before/after comparisons
        with Progress(TextColumn("[bold]train[/] {task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=self.console) as bar:
            self._bar, self._job = bar, bar.add_task("", total=cfg.total_steps(), completed=self.start_step)
            try:
                yield iter(range(self.start_step, cfg.total_steps()))
            except ServedError as e:  # the teacher stopped answering or its budget is spent
                ckpt = self.learner.save(self.dir, self.tokenizer, extra={"config": dataclasses.asdict(cfg),
                                                                          **self.extra_state()},
                                         keep=cfg.keep_checkpoints)
                self.logger.close()
                raise UserError(f"the teacher stopped the run: {e}. Checkpoint {ckpt} holds the last finished "
                                f"step ({self.learner.step_count}); rerun with --resume to continue") from None
        self.logger.close()

    def eval_due(self, step: int) -> bool:
        """Whether `end_step(step)` runs the held-out eval (every eval_every, the last step, the
        warm start's end)."""
        cfg, done = self.cfg, step + 1
        boundary = cfg.warm_start_steps > 0 and done == cfg.warm_start_steps
        return bool(cfg.eval_every) and (done % cfg.eval_every == 0 or done == cfg.total_steps() or boundary)

    def end_step(self, step: int, metrics: dict[str, float], times: list[float],
                 episodes: list[Episode] | None = None) -> None:
        """The curriculum's update, timings, the held-out eval and checkpoint when due (and at the
        warm start's end), the metrics line, the progress bar. `times`: perf_counter at the
        start, after rollouts, after relabelling, after the update."""
        cfg = self.cfg
        t0, t1, t2, t3 = times
        metrics |= {"time/rollout_s": t1 - t0, "time/teacher_s": t2 - t1, "time/learner_s": t3 - t2,
                    "time/peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
        if hasattr(self.teacher, "metrics"):  # a served teacher's requests, retries, cache hits, cost
            metrics |= self.teacher.metrics()
        if torch.cuda.is_available():
            metrics["time/cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
        done, total = step + 1, cfg.total_steps()
        if self.warming(step):
            metrics["stage/warm_start"] = 1.0
        else:
            metrics |= self.tasks.update(step, episodes or [], metrics)
        boundary = cfg.warm_start_steps > 0 and done == cfg.warm_start_steps  # warm start -> method
        if self.eval_due(step):
            metrics |= self.evaluate()
        self.logger.log(done, metrics)
        if done % cfg.ckpt_every == 0 or done == total or boundary:
            self.learner.save(self.dir, self.tokenizer, extra={"config": dataclasses.asdict(cfg), **self.extra_state()},
                              keep=cfg.keep_checkpoints)
        self.last = metrics
        kl = metrics.get("teacher/reverse_kl", metrics.get("loss/ce", float("nan")))
        self._bar.update(self._job, completed=done, description=(
            f"step {done}/{total} success={metrics.get('rollout/success', metrics.get('demo/success', float('nan'))):.2f} "
            f"{'teacher KL' if 'teacher/reverse_kl' in metrics else 'CE'}={kl:.3f}"
            + (f" eval={metrics['eval/success']:.2f}" if "eval/success" in metrics else "")))

    start_step: int = 0
    resumed_extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    """The recipe state of the checkpoint this run resumed from ({} for a fresh run)."""
    _expert_turns: dict[str, int] = dataclasses.field(default_factory=dict)
    skills: Any = None
    """Skill-SD's `SkillLibrary` (None for other methods)."""
    world: World = SINGLE
    """This process's rank under torchrun (`agentopd.training.distributed`)."""
    _reference: Any = None

    def extra_state(self) -> dict[str, Any]:
        """Recipe state saved with each checkpoint (the curriculum's; the skill library's)."""
        out: dict[str, Any] = {"curriculum": self.tasks.state_dict()}
        if self.skills is not None:
            out["skills"] = self.skills.to_json()
        return out


def preflight(cfg: TrainConfig) -> None:
    """Every check that needs no model: the config, the env id, model paths, the output
    directory. Raises `UserError` (one line); nothing is written."""
    try:
        cfg.validate()
        resolve_env_id(cfg.env)
        check_model_name(parse_spec(cfg.student).name)
        if parse_spec(cfg.student).backend == "vllm" and not vllm_available():
            raise ValueError(f"--student {cfg.student}: vLLM is not installed here; {INSTALL_HINT}")
        if cfg.teacher.startswith("hf:"):
            check_model_name(parse_spec(cfg.teacher).name)
    except ValueError as e:
        raise UserError(str(e)) from None
    require_sandbox(cfg.sandbox)
    out = Path(cfg.out).resolve()
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {cfg.out} is a file: choose a directory")
    base = out
    while not base.exists():
        base = base.parent
    if not os.access(base, os.W_OK | os.X_OK):
        raise UserError(f"--out {cfg.out}: {base} is not writable; choose a directory you can write")
    if has_checkpoints(out) and not cfg.resume:
        raise SystemExit(f"{cfg.out} already holds checkpoints; pass --resume to continue or choose a new --out")


def require_sandbox(level: str) -> None:
    """``strict``: model-written code runs only under namespaces, or the run does not start."""
    if level != "strict":
        return
    from agentopd.tools.python_sandbox import STRICT_ENV, STRICT_MODES, sandbox_info

    info = sandbox_info()  # probed first: the probe itself may run in a weaker mode
    os.environ[STRICT_ENV] = "1"  # run_python refuses weaker modes from here on, too
    if info.mode not in STRICT_MODES:
        raise UserError(f"--sandbox strict: this machine's strongest sandbox is {info.mode!r} (missing: "
                        f"{', '.join(info.missing)}); allow user namespaces, or run as root, or use --sandbox auto")


def _load(what: str, fn, *args, **kw):
    """A model or tokenizer load whose failure is the user's to fix (a wrong id, no network)."""
    try:
        return fn(*args, **kw)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot load the {what} {args[0]!r}: {str(e).splitlines()[0]}") from None


def start(cfg: TrainConfig, console: Console | None = None) -> Run:
    """Check everything, load student, teacher and learner (or resume them), then open the run
    directory: a run that cannot start writes nothing."""
    console = console or Console()
    preflight(cfg)
    world = distributed.init(cfg.device)
    if world.distributed:
        check_distributed(cfg, world)
        cfg = dataclasses.replace(cfg, device=distributed.device_for(cfg.device),
                                  teacher_device=distributed.device_for(cfg.teacher_device) if cfg.teacher_device else "")
        if not world.main:
            console = Console(quiet=True)  # rank 0 speaks for the run
    loss = cfg.resolved_loss()
    run = Path(cfg.out)
    ckpt, skipped = find_checkpoint(run)
    for note in skipped:
        console.print(f"[yellow]skipping a damaged checkpoint:[/] {note}")
    if ckpt is None and has_checkpoints(run):  # never restart silently over a damaged run
        raise UserError(f"{run} holds no intact checkpoint to resume ({'; '.join(skipped)}): "
                        "remove it or choose a new --out")
    torch.manual_seed(cfg.seed)
    student = parse_spec(cfg.student).name
    tok = _load("student tokenizer", load_tokenizer, student)
    model = _load("student", load_causal_lm, str(ckpt) if ckpt else student, device=cfg.device, dtype="float32")
    dtype = cfg.compute_dtype()
    console.print(f"compute dtype: {dtype}" + (" (auto)" if cfg.dtype == "auto" else ""))
    try:
        renderer = cached_renderer(tok, cfg.renderer)
    except (ValueError, RenderError) as e:
        raise UserError(f"--renderer {cfg.renderer}: {e}") from None
    hf_policy = HFPolicy(model, tok, dtype=getattr(torch, dtype), stop_token_ids=renderer.stop_token_ids)
    if world.distributed or cfg.overlap_rollouts:  # the learner shards or steps while this one samples
        hf_policy = hf_policy.detached()
    policy: HFPolicy | VLLMPolicy = hf_policy
    if parse_spec(cfg.student).backend == "vllm":  # the same weights in vLLM's engine (see sync_policy)
        ctx = min(cfg.max_context_tokens, getattr(model.config, "max_position_embeddings", cfg.max_context_tokens))
        policy = _load("student engine", VLLMPolicy, str(ckpt) if ckpt else student, tok, dtype=dtype,
                       max_model_len=ctx, stop_token_ids=renderer.stop_token_ids, seed=cfg.seed)
    teacher = _load("teacher", build_teacher, cfg.teacher, hf_policy.model if world.distributed else model, tok, device=cfg.teacher_device or cfg.device,
                    only_diverged=cfg.dagger_only_diverged, dtype=dtype, max_tokens=cfg.micro_tokens(),
                    temperature=cfg.teacher_temperature, served=cfg.served_options(str(run)))
    if hasattr(teacher, "renderer"):  # the self teacher renders its skill-card prefix in the run's format
        teacher.renderer = renderer
    if hasattr(teacher, "reply_text"):  # a chat API's structured tool calls, as the env's call text
        teacher.reply_text = FORMATS[cfg.tool_format].openai_text
    if hasattr(teacher, "negotiate"):  # a served teacher: what the server gives, before any step
        try:
            caps = teacher.negotiate(cfg.needs(), cfg.gkd_topk, cfg.gkd_temperature if cfg.gkd_topk else 1.0)
        except TeacherError as e:
            raise UserError(str(e)) from None
        console.print(f"teacher server: prompt logprobs {'yes' if caps.prompt_logprobs else 'no'}"
                      f", completions {'yes' if caps.completions else 'no'}, chat {'yes' if caps.chat else 'no'}")
    learner = Learner(distributed.shard(model, world), cfg.optim_config(), cfg.total_steps(),
                      pad_id=tok.pad_token_id or 0, world=world)
    extra: dict[str, Any] = {}
    if ckpt is not None:
        extra = learner.load_state(ckpt)
        console.print(f"resumed from {ckpt} (step {learner.step_count})")
    train_env = train_env_factory(cfg)()
    train_ids = [t.id for t in env_attr(train_env, "tasks")]
    budget = cfg.curriculum_max_window or cfg.max_turns or int(getattr(train_env.spec, "max_episode_steps", None) or 12)
    train_env.close()
    test_ids = [t.id for t in env_attr(make_env(cfg.env, split="test", **cfg.env_kwargs()), "tasks")][: cfg.eval_n]
    if world.main:
        run.mkdir(parents=True, exist_ok=True)
        dropped = repair_metrics(run, learner.step_count if ckpt is not None else -1)
        if dropped:
            console.print(f"dropped {dropped} metrics line(s) past the checkpoint (torn, or of steps that run again)")
        # Saved with `loss` resolved, so `agentopd train --config RUN/config.json` reruns exactly this.
        (run / "config.json").write_text(json.dumps(dataclasses.asdict(dataclasses.replace(cfg, loss=loss)), indent=2))
    distributed.barrier(world)
    if world.distributed:
        console.print(f"torchrun: {world.size} ranks, FSDP2 over {cfg.device} "
                      f"({'gloo' if cfg.device == 'cpu' else 'nccl'}); {cfg.episodes_per_step} episodes a step split across them")
    r = Run(cfg, run, console, tok, policy, teacher, learner, UniformTasks(train_ids, cfg.seed), test_ids,
            MetricsLogger(run) if world.main else NullLogger(), world=world)
    r.tasks = make_curriculum(cfg, train_ids, budget, r.expert_turns)
    r.tasks.load_state_dict(extra.get("curriculum", {}))
    r.resumed_extra = extra
    return r


def check_distributed(cfg: TrainConfig, world: World) -> None:
    """What a torchrun launch cannot run (yet), in one line each."""
    loss = cfg.resolved_loss()
    if loss in ("skill_sd", "sdpo"):
        raise UserError(f"--loss {loss} keeps per-task groups and a shared skill library, which this launcher "
                        "does not split across ranks: run it in one process (without torchrun)")
    if parse_spec(cfg.student).backend == "vllm":
        raise UserError("a vllm: student under torchrun is not supported: use an hf: student (each rank samples "
                        "with its own synced copy), or run vLLM in one process")
    if cfg.overlap_rollouts:
        raise UserError("--overlap-rollouts under torchrun is not supported yet: drop one of them")
    if cfg.episodes_per_step < world.size:
        raise UserError(f"--episodes-per-step {cfg.episodes_per_step} is fewer than the {world.size} ranks: "
                        "each rank needs at least one episode a step")


class NullLogger:
    """Ranks other than 0 log nothing (rank 0 writes the run's metrics)."""

    def log(self, step: int, metrics: dict[str, float]) -> None:
        pass

    def close(self) -> None:
        pass


def make_curriculum(cfg: TrainConfig, train_ids: list[str], budget: int, expert_turns) -> TaskSampler:
    """The run's task sampler: uniform, or one of TCOD's curricula over the method's steps."""
    w = cfg.warm_start_steps  # the curriculum counts the method's steps
    if cfg.curriculum == "f2b":
        return ForwardWindow(train_ids, cfg.seed, cfg.curriculum_every, budget, offset=w)
    if cfg.curriculum == "b2f":
        return BackwardReplay(train_ids, cfg.seed, cfg.curriculum_every, expert_turns, offset=w)
    if cfg.curriculum == "kl":
        return KLWindow(train_ids, cfg.seed, cfg.curriculum_kl_threshold, budget)
    return UniformTasks(train_ids, cfg.seed)


def train_env_factory(cfg: TrainConfig):
    """Makes training-split envs, with the `max_turns` cap when one is set (a partial of plain
    values: a Ray env pool pickles it without the config)."""
    turn_cap = {"max_episode_steps": cfg.max_turns} if cfg.max_turns > 0 else {}
    return functools.partial(make_env, cfg.env, split="train", **turn_cap, **cfg.env_kwargs())


def now() -> float:
    return time.perf_counter()

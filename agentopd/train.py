"""`agentopd train`: on-policy distillation of a multi-turn tool-using student, top to bottom.

Per step: sample training tasks -> batched student rollouts -> teacher relabel -> loss ->
optimizer step -> metrics (per turn) -> every K steps a held-out eval and a checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import random
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from agentopd import losses
from agentopd.learner import Learner, OptimConfig, latest_checkpoint
from agentopd.metrics import first_divergence, summarize
from agentopd.metrics_log import MetricsLogger
from agentopd.models import load_causal_lm, load_tokenizer, parse_spec
from agentopd.policy import HFPolicy, SamplingParams
from agentopd.registry import make_env, tool_api
from agentopd.rollout import RolloutConfig, run_episodes
from agentopd.rows import Batch
from agentopd.teachers import HFTeacher, OracleTeacher, SelfTeacher, check_signal
from agentopd.turn_metrics import TurnAccumulator, episode_turn_metrics

LOSSES = ("reverse_kl_pg", "gkd", "sft", "dagger")


@dataclass(frozen=True)
class TrainConfig:
    """Every option of `agentopd train` (CLI flags and config-file keys are these names)."""

    env: str = "agentopd/Calc-v0"
    """Env id or pkg.module:Class entry point."""
    student: str = "hf:smollm2-135m"
    """Student model spec (hf:<name-or-path>); the default is the embedded SmolLM2-135M-Instruct."""
    teacher: str = "self"
    """self (student + skill card; the default, chosen by benchmarks/default_teacher.sh),
    oracle (the env's expert, DAgger), or hf:<model>."""
    loss: str = "auto"
    """reverse_kl_pg | gkd | sft | dagger; auto = dagger for the oracle, reverse_kl_pg otherwise."""
    steps: int = 5
    """Optimizer steps."""
    episodes_per_step: int = 8
    """Student episodes rolled out per step."""
    out: str = "runs/train"
    """Run directory: config.json, metrics.jsonl, tb/, checkpoints step_<N>/."""
    resume: bool = False
    """Continue from the run directory's latest checkpoint."""
    seed: int = 0
    """Seeds task sampling, rollouts and the learner."""
    lr: float = 5e-5
    """Peak learning rate (AdamW)."""
    warmup_steps: int = 0
    """Linear LR warmup steps."""
    schedule: str = "constant"
    """LR schedule after warmup: constant | cosine."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    grad_clip: float = 1.0
    """Max gradient norm (0 disables)."""
    max_tokens_per_micro: int = 4096
    """Tokens per learner micro-batch (prefix-tree nodes when packing); gradients accumulate."""
    pack: bool = True
    """Pack rows that share prefixes into one forward (exact; see agentopd/packing.py)."""
    autocast: str = "none"
    """bf16 autocast on the learner (CUDA) or none."""
    grad_checkpointing: bool = False
    """Recompute activations in the backward pass (less learner memory, ~1 more forward of time)."""
    temperature: float = 1.0
    """Rollout sampling temperature (1.0 keeps the recorded logprobs equal to the policy's)."""
    max_new_tokens: int = 96
    """Per-turn token cap in rollouts. The expert's turns on the released tasks take at most 44
    tokens on calc and 105 on sql, but up to 224 on files and 268 on python: raise it there."""
    max_context_tokens: int = 4096
    """Episode token budget."""
    max_turns: int = 0
    """Cap on assistant turns per training episode (0 = the env's own turn budget); the
    held-out eval always uses the env's budget."""
    kl_coef: float = 1.0
    """reverse_kl_pg: the coefficient c of the advantage -c (log mu - log pi_T)."""
    clip_eps: float = 0.2
    """reverse_kl_pg: PPO clip epsilon (0 disables clipping)."""
    discount: float = 0.0
    """reverse_kl_pg: discount gamma over future tokens (0 = none)."""
    gkd_beta: float = 0.5
    """gkd: JSD interpolation beta (0 forward KL, 1 reverse KL)."""
    gkd_temperature: float = 0.9
    """gkd: softmax temperature of both distributions."""
    gkd_topk: int = 0
    """gkd: 0 = full-vocabulary JSD; K > 0 = the teacher keeps only its top-K log-probs per token
    (what a served teacher returns) and the loss is JSD over those K tokens plus a tail bucket."""
    gkd_lambda: float = 1.0
    """gkd: fraction of steps trained on student rollouts (the rest on teacher-generated ones)."""
    dagger_only_diverged: bool = False
    """dagger: train only on turns where the student failed the per-turn oracle check."""
    eval_every: int = 5
    """Held-out eval every K steps (and after the last); 0 disables."""
    eval_at_start: bool = True
    """Also evaluate before the first step (the baseline for before/after comparisons)."""
    eval_n: int = 32
    """Held-out (test split) tasks per eval."""
    eval_temperature: float = 0.0
    """Eval sampling temperature (0 = greedy)."""
    ckpt_every: int = 5
    """Checkpoint every K steps (and after the last)."""
    keep_checkpoints: int = 2
    """How many checkpoints to keep."""
    device: str = "cpu"
    """Student device: cpu | cuda."""
    teacher_device: str = ""
    """Teacher device (default: the student's)."""

    def resolved_loss(self) -> str:
        if self.loss != "auto":
            return self.loss
        return "dagger" if self.teacher == "oracle" else "reverse_kl_pg"

    def optim_config(self) -> OptimConfig:
        """The learner's settings (by name: the two dataclasses order their fields differently)."""
        names = {f.name for f in dataclasses.fields(OptimConfig)}
        return OptimConfig(**{k: v for k, v in dataclasses.asdict(self).items() if k in names})

    def validate(self) -> None:
        loss = self.resolved_loss()
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; choose one of {LOSSES} or auto")
        if self.teacher not in ("oracle", "self") and not self.teacher.startswith("hf:"):
            raise ValueError(f"unknown teacher {self.teacher!r}: oracle | self | hf:<model>")
        if loss in ("reverse_kl_pg", "gkd") and self.teacher == "oracle":
            raise ValueError(f"loss {loss} needs teacher logprobs: use --teacher self or hf:<model> "
                             "(the oracle writes text: use --loss dagger or sft)")
        if loss == "dagger" and self.teacher != "oracle":
            raise ValueError("dagger relabels with the env's expert: use --teacher oracle")
        if loss == "gkd" and self.gkd_lambda < 1.0 and not self.teacher.startswith("hf:"):
            raise ValueError("gkd_lambda < 1 samples teacher-generated episodes: needs an hf: teacher")
        if self.gkd_topk < 0 or (self.gkd_topk > 0 and loss != "gkd"):
            raise ValueError("gkd_topk must be >= 0, and > 0 only with --loss gkd")
        if self.max_turns < 0:
            raise ValueError("max_turns must be >= 0 (0 = the env's turn budget)")
        if self.steps < 1 or self.episodes_per_step < 1:
            raise ValueError("steps and episodes_per_step must be >= 1")
        if parse_spec(self.student).backend != "hf":
            raise ValueError("the learner trains an hf:<model> student")


def main(cfg: TrainConfig, console: Console | None = None) -> dict[str, float]:
    console = console or Console()
    cfg.validate()
    loss_name = cfg.resolved_loss()
    run = Path(cfg.out)
    ckpt = latest_checkpoint(run)
    if ckpt is not None and not cfg.resume:
        raise SystemExit(f"{run} already holds checkpoints; pass --resume to continue or choose a new --out")
    run.mkdir(parents=True, exist_ok=True)
    # Saved with `loss` resolved, so `agentopd train --config RUN/config.json` reruns exactly this.
    (run / "config.json").write_text(json.dumps(dataclasses.asdict(dataclasses.replace(cfg, loss=loss_name)), indent=2))
    torch.manual_seed(cfg.seed)

    # ---- student, teacher, learner -------------------------------------------------------
    student_name = parse_spec(cfg.student).name
    tok = load_tokenizer(student_name)
    model = load_causal_lm(str(ckpt) if ckpt else student_name, device=cfg.device, dtype="float32")
    policy = HFPolicy(model, tok)
    teacher = build_teacher(cfg, model, tok)
    learner = Learner(model, cfg.optim_config(), cfg.steps, pad_id=tok.pad_token_id or 0)
    if ckpt is not None:
        learner.load_state(ckpt)
        console.print(f"resumed from {ckpt} (step {learner.step_count})")
    make_train = train_env_factory(cfg)
    make_test = lambda: make_env(cfg.env, split="test")  # noqa: E731
    train_ids = [t.id for t in tool_api(make_train()).tasks]
    test_ids = [t.id for t in tool_api(make_test()).tasks][: cfg.eval_n]
    rollout = RolloutConfig(SamplingParams(cfg.max_new_tokens, cfg.temperature), cfg.max_context_tokens)
    logger = MetricsLogger(run)
    last: dict[str, float] = {}

    def evaluate() -> dict[str, float]:
        """Held-out success and per-turn success on the first `eval_n` test tasks."""
        eps = run_episodes(make_test, policy, test_ids, list(range(len(test_ids))),
                           RolloutConfig(SamplingParams(cfg.max_new_tokens, cfg.eval_temperature, seed=cfg.seed),
                                         cfg.max_context_tokens), cfg.env)
        renamed = {"turn/": "eval_turn/", "tool/": "eval_tool/", "stop/": "eval_stop/"}
        out: dict[str, float] = {}
        for k, v in summarize(eps, prefix="eval/").items():
            head = k[: k.index("/") + 1]
            if head == "eval/" or head in renamed:
                out[renamed.get(head, head) + k[len(head):]] = v
        return out

    if cfg.eval_every and cfg.eval_at_start and learner.step_count == 0:
        logger.log(0, evaluate())  # the starting point, for before/after comparisons

    with Progress(TextColumn("[bold]train[/] {task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console) as bar:
        job = bar.add_task("", total=cfg.steps, completed=learner.step_count)
        for step in range(learner.step_count, cfg.steps):
            # Per-step RNG: a resumed run samples the same tasks as an uninterrupted one.
            rng = random.Random(cfg.seed * 1_000_003 + step)
            task_ids = rng.sample(train_ids, min(cfg.episodes_per_step, len(train_ids)))
            seeds = [rng.randrange(2**31) for _ in task_ids]
            params = dataclasses.replace(rollout.sampling, seed=cfg.seed * 7919 + step)
            t0 = time.perf_counter()

            # ---- rollout: the student acts in its own states --------------------------------
            on_policy = loss_name != "sft" and (loss_name != "gkd" or rng.random() < cfg.gkd_lambda)
            if loss_name == "sft" and cfg.teacher == "oracle":
                from agentopd.demos import oracle_demo_episodes

                episodes = oracle_demo_episodes(make_train, task_ids, seeds, tok)
            else:  # the student's own episodes, or the teacher's (SFT demos, GKD's 1 - lambda)
                actor = policy if on_policy else teacher_policy(teacher, tok)
                episodes = run_episodes(make_train, actor, task_ids, seeds,
                                        dataclasses.replace(rollout, sampling=params), cfg.env)
            episodes = [e for e in episodes if e.stop_reason.value != "error"]  # infra errors never train
            policy.invalidate()  # cached keys/values go stale at this step's update: free them now
            t1 = time.perf_counter()

            # ---- teacher relabel --------------------------------------------------------------
            if loss_name == "sft":
                from agentopd.demos import demo_rows

                rows = demo_rows(episodes, successful_only=False)  # all teacher outputs, as in GKD's SFT baseline
            else:
                rows = teacher.relabel(episodes, make_train)
            metrics: dict[str, float] = {}
            if getattr(teacher, "provides_logits", False) and loss_name in ("reverse_kl_pg", "gkd"):
                metrics |= check_signal(rows)
                if step == learner.step_count and _identical_signal(rows):
                    console.print("[yellow]warning:[/] the teacher gives exactly the student's logprobs "
                                  "on every token: the distillation signal is zero")
            if not rows or sum(r.n_targets for r in rows) == 0:
                raise RuntimeError(f"step {step}: no training targets (every episode failed or was empty)")
            t2 = time.perf_counter()

            # ---- loss and optimizer step ------------------------------------------------------
            acc = TurnAccumulator()
            metrics |= learner.step(rows, make_loss(cfg, loss_name, teacher, acc))
            t3 = time.perf_counter()

            # ---- metrics --------------------------------------------------------------------
            if on_policy and loss_name != "sft":
                metrics |= summarize(episodes, prefix="rollout/")
                metrics |= episode_turn_metrics(episodes, rows)
                div = [first_divergence(e) for e in episodes]
                metrics["rollout/first_divergence_mean"] = (
                    sum(d for d in div if d is not None) / max(1, sum(d is not None for d in div)))
                metrics["rollout/never_diverged"] = sum(d is None for d in div) / len(div)
            else:  # demonstrations (oracle or teacher episodes): how good was the data?
                metrics |= {k: v for k, v in summarize(episodes, prefix="demo/").items() if k.startswith("demo/")}
            metrics |= acc.metrics()
            metrics |= {"time/rollout_s": t1 - t0, "time/teacher_s": t2 - t1, "time/learner_s": t3 - t2,
                        "time/peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
            if torch.cuda.is_available():
                metrics["time/cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
            done = step + 1
            if cfg.eval_every and (done % cfg.eval_every == 0 or done == cfg.steps):
                metrics |= evaluate()
            logger.log(done, metrics)
            if done % cfg.ckpt_every == 0 or done == cfg.steps:
                learner.save(run, tok, extra={"config": dataclasses.asdict(cfg)}, keep=cfg.keep_checkpoints)
            last = metrics
            kl = metrics.get("teacher/reverse_kl", metrics.get("loss/ce", float("nan")))
            bar.update(job, completed=done, description=(
                f"step {done}/{cfg.steps} success={metrics.get('rollout/success', float('nan')):.2f} "
                f"{'teacher KL' if 'teacher/reverse_kl' in metrics else 'CE'}={kl:.3f}"
                + (f" eval={metrics['eval/success']:.2f}" if "eval/success" in metrics else "")))
    logger.close()
    return last


def train_env_factory(cfg: TrainConfig):
    """Makes training-split envs, with the `max_turns` cap when one is set."""
    turn_cap = {"max_episode_steps": cfg.max_turns} if cfg.max_turns > 0 else {}
    return lambda: make_env(cfg.env, split="train", **turn_cap)


def _identical_signal(rows) -> bool:
    return all(abs(o - t) < 1e-6 for r in rows for o, t, m in zip(r.old_logp, r.teacher_logp, r.loss_mask) if m)


def build_teacher(cfg: TrainConfig, student_model, tok):
    if cfg.teacher == "oracle":
        return OracleTeacher(tok, only_diverged=cfg.dagger_only_diverged)
    topk: dict[str, Any] = {"topk": cfg.gkd_topk, "topk_temperature": cfg.gkd_temperature} if cfg.resolved_loss() == "gkd" else {}
    if cfg.teacher == "self":
        return SelfTeacher(student_model, tok, **topk)
    name = parse_spec(cfg.teacher).name
    t_tok = load_tokenizer(name)
    t_model = load_causal_lm(name, device=cfg.teacher_device or cfg.device, dtype="float32")
    return HFTeacher(t_model, t_tok, tok, **topk)


def teacher_policy(teacher, tok) -> HFPolicy:
    """The teacher model as a sampler (GKD's teacher-generated fraction, SFT demos)."""
    return HFPolicy(teacher.model, tok)


def make_loss(cfg: TrainConfig, name: str, teacher, acc: TurnAccumulator):
    """The loss closure for `Learner.step`; also feeds per-turn statistics into `acc`."""

    def fn(logits_NV: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        sel = (batch.mask != 0).to(logits_NV.device)  # (B, T-1): where logits_NV's rows sit
        targets_1N = batch.target_ids.to(logits_NV.device)[sel][None]
        w_1N = batch.mask.to(logits_NV.device)[sel][None]
        logp_N = losses.token_logprobs(logits_NV[None], targets_1N)[0]
        acc.add(batch, logits_NV.detach(), logp_N.detach())
        if name == "reverse_kl_pg":
            # back to the (B, T-1) layout: the discount runs over positions within a row
            logp_BT = torch.zeros(sel.shape, dtype=logp_N.dtype, device=sel.device).masked_scatter(sel, logp_N)
            dev = sel.device
            assert batch.teacher_logp is not None  # checked by the teacher-signal check
            out = losses.reverse_kl_pg(logp_BT, batch.old_logp.to(dev), batch.teacher_logp.to(dev),
                                       batch.mask.to(dev), kl_coef=cfg.kl_coef,
                                       clip_eps=cfg.clip_eps or None, discount=cfg.discount)
        elif name == "gkd" and cfg.gkd_topk > 0:
            ids_1NK = torch.tensor([k for r in batch.rows for k in r.teacher_topk_ids or ()], device=logits_NV.device)[None]
            lp_1NK = torch.tensor([k for r in batch.rows for k in r.teacher_topk_logp or ()], device=logits_NV.device)[None]
            out = losses.gkd_jsd_topk(logits_NV[None], ids_1NK, lp_1NK, w_1N, beta=cfg.gkd_beta,
                                      temperature=cfg.gkd_temperature)
        elif name == "gkd":
            t_logits_NV = teacher.logits_for(batch).to(logits_NV.device)
            out = losses.gkd_jsd(logits_NV[None], t_logits_NV[None], w_1N, beta=cfg.gkd_beta,
                                 temperature=cfg.gkd_temperature)
        else:  # sft, dagger
            out = losses.cross_entropy(logits_NV[None], targets_1N, w_1N)
        return out.loss, out.metrics

    return fn

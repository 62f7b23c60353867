"""The learner: AdamW with warmup and schedule, token-budgeted micro-batches (gradient
accumulation), gradient clipping, autocast, and atomic, resumable checkpoints.

A checkpoint is a directory ``step_<N>/`` holding a plain ``save_pretrained`` model (loadable
by transformers alone) and ``trainer_state.pt`` (optimizer, scheduler, RNG states, step and
any extra state of the recipe). It is written to a temporary directory and renamed into
place, then ``latest`` is replaced atomically, so a run killed at any moment resumes from the
last complete checkpoint and loses at most the step in flight; a manifest written last lets
`agentopd.training.checkpoint` verify it (and fall back to an older one) on resume.
"""

from __future__ import annotations

import math
import os
import random
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agentopd.core.rows import TrainRow
from agentopd.inference.forward import logits_at, pack_groups, supports_packing
from agentopd.training import distributed
from agentopd.training.batching import Batch, collate, micro_batches
from agentopd.training.checkpoint import atomic_write, write_manifest
from agentopd.training.distributed import SINGLE, World


@dataclass(frozen=True)
class OptimConfig:
    """Optimizer and batching settings."""

    lr: float = 1e-5
    weight_decay: float = 0.0
    warmup_steps: int = 0
    """Linear warmup from 0 to `lr` over this many steps."""
    schedule: str = "constant"
    """After warmup: ``constant`` or ``cosine`` (to 10% of lr at the last step)."""
    grad_clip: float = 1.0
    """Max global grad norm (0 disables)."""
    max_tokens_per_micro: int = 4096
    """Tokens per forward/backward (prefix-tree nodes when packing, rows x padded length
    otherwise); gradients accumulate across micro-batches."""
    pack: bool = True
    """Pack each micro-batch's rows into one prefix tree (shared prefixes computed once; see
    `agentopd.inference.forward`). Falls back to padded batches for attention kernels without 4-D masks."""
    autocast: str = "none"
    """``bf16`` autocast (CUDA; on CPUs without bf16 units it is slower) or ``none``."""
    grad_checkpointing: bool = False
    """Recompute each layer's activations in the backward pass instead of storing them: far less
    memory per micro-batch token for about one more forward of compute."""
    stage_steps: int = 0
    """A first stage of this many steps at the constant `stage_lr` (a warm start); the warmup
    and schedule run over the steps after it."""
    stage_lr: float = 0.0


def lr_lambda(cfg: OptimConfig, total_steps: int) -> Callable[[int], float]:
    def f(step: int) -> float:
        if step < cfg.stage_steps:
            return cfg.stage_lr / cfg.lr
        step -= cfg.stage_steps
        total = total_steps - cfg.stage_steps
        if cfg.warmup_steps and step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if cfg.schedule == "cosine":
            span = max(1, total - cfg.warmup_steps)
            frac = min(1.0, (step - cfg.warmup_steps) / span)
            return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac))
        return 1.0

    return f


LossFn = Callable[[torch.Tensor, Batch], tuple[torch.Tensor, dict[str, float]]]
"""(logits (N, V) at the batch's target positions ``batch.mask != 0``, in row-major order,
batch) -> (loss averaged over the batch's masked tokens, metrics)."""


def target_logits(model, batch: Batch, pack: bool) -> torch.Tensor:
    """The model's logits (N, V) at the batch's target positions (row-major order)."""
    sel = batch.mask != 0  # (B, T-1)
    positions = [sel[i].nonzero().squeeze(-1).tolist() for i in range(sel.shape[0])]
    return logits_at(model, [r.input_ids for r in batch.rows], positions, pack=pack)


class SamplerGap:
    """The rollout sampler's logprobs against the learner's on the same sampled tokens, before
    the update: ``d = log pi_learner - log mu_sampler`` over every target with a recorded
    sampler logprob (``old_logp != 0``; expert targets carry 0). Logged each step as
    ``rollout/importance_ratio_mean`` (mean exp(d)) and ``_std`` (its spread: what overlapped,
    one-step-stale rollouts cost), ``rollout/sampler_learner_logp_diff_mean``
    and ``_max`` (of |d|). With a sampler in step with the learner, at temperature 1 and
    without top-k/top-p, exp(d) is 1 up to float rounding; a stale or mis-synced sampler
    (another backend's weights, a missed update) shows here whatever the objective."""

    def __init__(self) -> None:
        self.n = 0
        self.ratio = self.ratio_sq = self.abs_sum = self.abs_max = 0.0

    @torch.no_grad()
    def add(self, logits_NV: torch.Tensor, batch: Batch) -> None:
        tgt = batch.mask != 0
        sampled = (batch.old_logp != 0)[tgt].to(logits_NV.device)  # (N,): which targets were sampled
        if not bool(sampled.any()):
            return
        ids = batch.target_ids[tgt].to(logits_NV.device)[sampled]
        lg = logits_NV[sampled]
        # in chunks: a float copy of all N x V logits at once can be most of a step's memory
        new = torch.cat([c.float().gather(-1, i[:, None]).squeeze(-1) - c.float().logsumexp(-1)
                         for c, i in zip(lg.split(1024), ids.split(1024))])
        d = new.double() - batch.old_logp[tgt][sampled.cpu()].to(new.device, torch.float64)
        self.n += d.numel()
        self.ratio += float(d.exp().sum())
        self.ratio_sq += float((2 * d).exp().sum())
        self.abs_sum += float(d.abs().sum())
        self.abs_max = max(self.abs_max, float(d.abs().max()))

    def metrics(self, world: World = SINGLE) -> dict[str, float]:
        if world.distributed:  # every rank's tokens
            tot = distributed.all_sum({"n": self.n, "ratio": self.ratio, "sq": self.ratio_sq, "abs": self.abs_sum}, world)
            self.n, self.ratio, self.ratio_sq, self.abs_sum = int(tot["n"]), tot["ratio"], tot["sq"], tot["abs"]
            self.abs_max = distributed.all_max(self.abs_max, world)
        if not self.n:
            return {}
        mean = self.ratio / self.n
        return {"rollout/importance_ratio_mean": mean,
                "rollout/importance_ratio_std": max(0.0, self.ratio_sq / self.n - mean * mean) ** 0.5,
                "rollout/sampler_learner_logp_diff_mean": self.abs_sum / self.n,
                "rollout/sampler_learner_logp_diff_max": self.abs_max}


class Learner:
    """`model` is the trained module: plain, or FSDP2-sharded over `world` (`distributed.shard`),
    in which case every rank calls `step` and `save` together on its own slice of the rows."""

    def __init__(self, model, cfg: OptimConfig, total_steps: int, pad_id: int, world: World = SINGLE):
        if cfg.schedule not in ("constant", "cosine"):
            raise ValueError(f"unknown lr schedule {cfg.schedule!r} (constant | cosine)")
        self.model = model
        self.cfg = cfg
        self.pad_id = pad_id
        self.world = world
        self.opt = torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=cfg.weight_decay
        )
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lr_lambda(cfg, total_steps))
        self.step_count = 0
        self.pack = cfg.pack and supports_packing(model)
        if cfg.grad_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def step(self, rows: Sequence[TrainRow], loss_fn: LossFn, on_policy: bool = True) -> dict[str, float]:
        """One optimizer step over all rows (mean over every target token of the step).

        `on_policy`: the rows' ``old_logp`` were recorded by the student's own sampler, so the
        step also logs how far the sampler's logprobs are from the learner's on those tokens
        (`SamplerGap`); False for rows another policy played (a teacher's demonstrations).

        Distributed, `rows` are this rank's: the loss is still the mean over every rank's target
        tokens (each rank weighs its micro-batches by the global count, and FSDP's gradient
        average over ranks is undone), so N ranks take the step one process would on all rows."""
        world = self.world
        local_total = sum(sum(r.loss_mask[1:]) for r in rows)
        total = int(distributed.all_sum({"t": local_total}, world)["t"]) if world.distributed else local_total
        if total == 0:
            raise ValueError("no target tokens in this step's rows")
        self.model.train()
        self.opt.zero_grad(set_to_none=True)
        agg: dict[str, float] = {}
        dev = self.device
        use_ac = self.cfg.autocast == "bf16"
        gap = SamplerGap() if on_policy else None
        micro = self.micro_batches(rows) if rows else []
        plan = [(g, True) for g in micro]
        if world.distributed:  # FSDP's collectives need the same number of forwards on every rank
            n = int(distributed.all_max(len(micro), world))
            if distributed.all_max(float(not micro), world):  # raised on every rank, so none waits
                raise ValueError("a rank has no rows this step: use at least as many episodes per step as ranks")
            plan += [(micro[0], False)] * (n - len(micro))
        for group, real in plan:
            batch = collate(group, self.pad_id)
            weight = float(batch.mask.sum()) / total if real else 0.0
            if weight == 0:
                if not world.distributed:
                    continue
                real = False  # still a forward and backward, for the collectives
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_ac):
                logits = target_logits(self.model, batch, self.pack)
            loss, metrics = loss_fn(logits.float(), batch) if real else (logits.float().sum(), {})
            (loss * (weight * world.size)).backward()  # a padding micro-batch adds exactly zero
            if gap is not None and real:
                gap.add(logits.detach(), batch)
            for k, v in metrics.items():
                agg[k] = agg.get(k, 0.0) + weight * float(v)
        agg = distributed.all_sum(agg, world)
        grad_norm = distributed.local(torch.nn.utils.clip_grad_norm_(
            self.model.parameters(), self.cfg.grad_clip if self.cfg.grad_clip > 0 else float("inf")
        ))
        if not torch.isfinite(grad_norm):
            self.opt.zero_grad(set_to_none=True)
            raise FloatingPointError(f"non-finite gradient norm ({grad_norm}) at step {self.step_count}")
        agg["learner/lr"] = self.opt.param_groups[0]["lr"]
        self.opt.step()
        self.sched.step()
        self.step_count += 1
        agg["learner/grad_norm"] = float(grad_norm)
        agg["learner/target_tokens"] = float(total)
        self.model.eval()
        return agg | (gap.metrics(world) if gap is not None else {})

    def micro_batches(self, rows: Sequence[TrainRow]) -> list[list[TrainRow]]:
        if self.pack:
            return [[rows[i] for i in g] for g in pack_groups([r.input_ids for r in rows], self.cfg.max_tokens_per_micro)]
        return micro_batches(rows, self.cfg.max_tokens_per_micro)

    # ---- checkpoints --------------------------------------------------------------------
    def save(self, run_dir: Path, tokenizer, extra: dict[str, Any] | None = None, keep: int = 2) -> Path:
        """Write ``step_<N>/`` (every rank calls it: the full state is gathered, rank 0 writes)."""
        run_dir = Path(run_dir)
        final = run_dir / f"step_{self.step_count}"
        weights = distributed.model_state(self.model, self.world) if self.world.distributed else None
        optim = distributed.optimizer_state(self.model, self.opt, self.world)
        if not self.world.main:
            distributed.barrier(self.world)  # returns once rank 0 has the checkpoint in place
            return final
        tmp = run_dir / f".tmp_step_{self.step_count}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        self.model.save_pretrained(tmp, safe_serialization=True, state_dict=weights)
        tokenizer.save_pretrained(tmp)
        torch.save({
            "step": self.step_count,
            "optimizer": optim,
            "scheduler": self.sched.state_dict(),
            "rng": {"python": random.getstate(), "numpy": np.random.get_state(),
                    "torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
            "extra": extra or {},
        }, tmp / "trainer_state.pt")
        write_manifest(tmp)  # last: a checkpoint without a matching manifest is not complete
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        atomic_write(run_dir / "latest", final.name)
        ckpts = sorted(run_dir.glob("step_*"), key=lambda p: int(p.name.split("_")[1]))
        for old in ckpts[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
        distributed.barrier(self.world)
        return final

    def load_state(self, ckpt: Path) -> dict[str, Any]:
        """Restore optimizer, scheduler, RNG and step (the model is loaded by the caller)."""
        state = torch.load(Path(ckpt) / "trainer_state.pt", weights_only=False)
        distributed.load_optimizer_state(self.model, self.opt, state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        random.setstate(state["rng"]["python"])
        np.random.set_state(state["rng"]["numpy"])
        torch.set_rng_state(state["rng"]["torch"])
        if state["rng"].get("cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        self.step_count = int(state["step"])
        return state.get("extra", {})

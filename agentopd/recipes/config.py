"""`TrainConfig`: every option of `agentopd train`, in one dataclass (CLI flags and config-file
keys are its field names), and the checks that run before anything loads."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from agentopd.core.capabilities import Signal, expand
from agentopd.inference.models import parse_spec
from agentopd.rollout.env_pool import check_env_pool
from agentopd.rollout.render import RENDERERS
from agentopd.teachers.factory import ServedOptions, teacher_kind, teachers_giving
from agentopd.tools.formats import FORMATS
from agentopd.training.learner import OptimConfig
from agentopd.training.objectives import CrossEntropy, ReverseKLPG, SkillSD

LOSSES = ("reverse_kl_pg", "gkd", "sft", "dagger", "skill_sd", "akl", "todi", "eopd", "gopd", "sdpo")
TOPK_LOSSES = ("gkd", "akl", "todi", "eopd")
"""Losses over the teacher's distribution: full vocabulary, or its top-K plus a tail (--gkd-topk)."""
CURRICULA = ("none", "f2b", "b2f", "kl")


OVERLAP_LOSSES = ("reverse_kl_pg", "gopd", "akl", "todi", "eopd")
"""Losses of the OPD recipe, whose rollouts can overlap learning (`overlap_rollouts`)."""

@dataclass(frozen=True)
class TrainConfig:
    """Every option of `agentopd train` (CLI flags and config-file keys are these names)."""

    env: str = "agentopd/Calc-v0"
    """Env id: a registered id, module:EnvId (imports module, which registers it), or class:pkg.module:Class."""
    student: str = "hf:smollm2-135m"
    """Student model spec (hf:<name-or-path>, or vllm:<name-or-path>: trained the same, sampled by vLLM's
    engine, which gets the new weights after every step); the default is the embedded SmolLM2-135M-Instruct."""
    teacher: str = "self"
    """self (student + skill card; the default, chosen by benchmarks/default_teacher.sh),
    oracle (the env's expert, DAgger), hf:<model>, or openai:<model>@<base_url> (a served model:
    prompt logprobs when the server gives them, else text relabels; probed before the first step)."""
    loss: str = "auto"
    """reverse_kl_pg | gkd | sft | dagger | skill_sd | akl | todi | eopd | gopd | sdpo; auto =
    dagger for the oracle, reverse_kl_pg otherwise."""
    steps: int = 5
    """Optimizer steps of the method, after the warm start."""
    warm_start_steps: int = 5
    """SFT steps on the env oracle's demonstrations before the method's steps (a held-out eval
    and a checkpoint at the boundary; 0 = none). On-policy distillation needs a student that
    already gives the teacher's choices some mass (REFERENCES, pitfall 8); 5 steps of 16 demos
    took calc from 5/32 to 17/32 held-out (benchmarks/RESULTS.md)."""
    warm_start_lr: float = 1e-4
    """Learning rate of the warm-start steps (constant)."""
    warm_start_episodes: int = 16
    """Demonstrations per warm-start step (0 = episodes_per_step)."""
    warm_start_from: str = "oracle"
    """Who plays the warm start's demonstrations: oracle (the env's expert) or teacher (an
    hf:<model> teacher samples its own episodes)."""
    episodes_per_step: int = 8
    """Student episodes rolled out per step."""
    out: str = "runs/train"
    """Run directory: config.json, metrics.jsonl, tb/, checkpoints step_<N>/."""
    resume: bool = False
    """Continue from the run directory's latest checkpoint."""
    seed: int = 0
    """Seeds task sampling, rollouts and the learner."""
    lr: float = 2e-5
    """Peak learning rate (AdamW) of the method's steps (the warm start has its own). With 8
    episodes a step, 1e-4 overshot (REFERENCES, pitfall 10)."""
    warmup_steps: int = 0
    """Linear LR warmup steps."""
    schedule: str = "constant"
    """LR schedule after warmup: constant | cosine."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    grad_clip: float = 1.0
    """Max gradient norm (0 disables)."""
    max_tokens_per_micro: int = 0
    """Tokens per learner micro-batch and teacher scoring forward (prefix-tree nodes when
    packing); gradients accumulate. 0 = 2048 on a CPU (the tree's attention grows with the
    square of its nodes: 1.2-1.3x faster than 4096 on 32 rows, as fast on 8;
    benchmarks/RESULTS.md), 8192 on CUDA."""
    pack: bool = True
    """Pack rows that share prefixes into one forward (exact; see agentopd/inference/forward.py)."""
    dtype: str = "auto"
    """Compute dtype of rollouts, local teachers and the learner's autocast: auto (bf16 on CUDA,
    and on a CPU with native bf16 units where it measures faster; fp32 otherwise), float32 or
    bfloat16. Master weights stay fp32."""
    autocast: str = "auto"
    """Learner autocast: auto (bf16 when --dtype resolves to bf16), bf16, or none."""
    grad_checkpointing: bool = False
    """Recompute activations in the backward pass (less learner memory, ~1 more forward of time)."""
    temperature: float = 1.0
    """Rollout sampling temperature (1.0 keeps the recorded logprobs equal to the policy's)."""
    max_new_tokens: int = 96
    """Per-turn token cap in rollouts. The expert's turns on the released tasks take at most 44
    tokens on calc and 105 on sql, but up to 224 on files and 268 on python: raise it there."""
    max_context_tokens: int = 4096
    """Episode token budget."""
    continuous_batching: bool = True
    """Rollouts and evals: an episode's next turn joins the sampling batch as soon as its env
    answers, instead of every turn waiting for the batch's slowest row (benchmarks/RESULTS.md)."""
    overlap_rollouts: bool = False
    """Sample the next step's episodes (with the weights before this step's update) while the
    teacher and learner work on this step's: one step of staleness, which the clipped
    importance ratio corrects; the sampler gets its own copy of the weights. OPD losses only
    (reverse_kl_pg, gopd, akl, todi, eopd); off by default (benchmarks/RESULTS.md: overlap)."""
    max_turns: int = 0
    """Cap on assistant turns per training episode (0 = the env's own turn budget); the
    held-out eval always uses the env's budget."""
    teacher_temperature: float = 1.0
    """Logit teachers score the student's sampled tokens at this temperature: above 1 a near
    one-hot teacher's log-probs (and so the reverse-KL advantages) soften."""
    curriculum: str = "none"
    """TCOD's temporal curricula (reverse_kl_pg, gkd, dagger): none; f2b (the student acts for
    W(s) = min(1 + s // curriculum_every, max window) turns, then the episode is cut); b2f (the
    oracle first replays all but the last j(s) = 1 + s // curriculum_every of its turns, then
    the student acts; replayed turns never train); kl (the f2b window, widened when the mean
    teacher KL at its frontier turn falls under curriculum_kl_threshold)."""
    curriculum_every: int = 4
    """TCOD's c_steps: on-policy steps per window change (f2b, b2f)."""
    curriculum_max_window: int = 0
    """TCOD's H_max: the widest window in student turns (0 = the env's turn budget)."""
    curriculum_kl_threshold: float = 0.2
    """kl curriculum: widen the window when the frontier turn's mean teacher KL (nats/token,
    log mu - log pi_T) falls under this."""
    group_size: int = 4
    """skill_sd: rollouts per task (GRPO's group G); episodes_per_step must be a multiple."""
    skill_kl_weight: float = 0.001
    """skill_sd: lambda of the importance-weighted k3 term (0.001 as published; 0.01 was unstable)."""
    skill_writer: str = "rules"
    """skill_sd: who writes skill cards from finished episodes: rules (from the env oracle's
    traces) or a model spec (hf:<model>, or self: the student) as an LLM writer."""
    skill_ucb_c: float = 1.0
    """skill_sd: exploration constant c of UCB retrieval, mean reward + c sqrt(ln N / n)."""
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
    """gkd, akl, todi, eopd: 0 = the teacher's full-vocabulary distribution; K > 0 = only its top-K
    log-probs per token (what a served teacher returns), the loss over those K plus a tail bucket."""
    gkd_lambda: float = 1.0
    """gkd: fraction of steps trained on student rollouts (the rest on teacher-generated ones)."""
    akl_mu: float = 0.5
    """akl: the head is the teacher's most likely tokens up to this cumulative mass."""
    todi_beta: float = 1.0
    """todi: sharpness of the per-token weight sigmoid(beta log(p_T / p_S))."""
    eopd_fkl_coef: float = 1.0
    """eopd: weight of the forward-KL term added on high-entropy teacher tokens."""
    eopd_entropy_threshold: float = 0.5
    """eopd: teacher entropy (nats) above which a token gets the forward-KL term."""
    gopd_lambda: float = 1.25
    """gopd: reward extrapolation lambda in lambda (log pi_T - log pi_ref) - (log pi_theta - log pi_ref);
    1 is plain reverse_kl_pg, > 1 extrapolates beyond the teacher."""
    gopd_ref: str = "start"
    """gopd: the reference policy: start (the student as the method starts, after any warm start)
    or hf:<model>."""
    sdpo_ratio_cap: float = 2.0
    """sdpo: cap of the importance weight pi_theta / mu (2 as published)."""
    tip_ratio: float = 0.0
    """TIP token selection: train on this fraction of each step's tokens, drawn by importance
    (H_S / ln V)^alpha (JSD / ln 2)^gamma (0 = all tokens); any on-policy logit loss."""
    tip_alpha: float = 1.0
    """TIP: exponent of the student's entropy."""
    tip_gamma: float = 1.0
    """TIP: exponent of the teacher-student JSD (needs a teacher with top-k or full logits; 0 =
    entropy alone, for sampled-token teachers)."""
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
    eval_stop_repeats: int = 3
    """Held-out evals end an episode once it has made the same tool call (name and arguments) K
    times (stop reason ``loop``, counted in ``stop/loop``); 0 = never. A looping student otherwise spends its whole
    turn budget: 7 minutes an eval on calc."""
    ckpt_every: int = 5
    """Checkpoint every K steps (and after the last)."""
    keep_checkpoints: int = 2
    """How many checkpoints to keep."""
    device: str = "cpu"
    """Student device: cpu | cuda."""
    teacher_device: str = ""
    """Teacher device (default: the student's)."""
    renderer: str = "auto"
    """Chat format of the student's (and local teachers') tokens: auto (the tokenizer's family,
    else its HF template, checked prefix-preserving), qwen3 (thinking kept in history),
    qwen3-nothink, qwen2.5, llama3, smollm, chatml or hf."""
    tool_format: str = "hermes"
    """How envs ask for and parse tool calls: hermes (<tool_call>{json}</tool_call>, Qwen and
    Hermes models) or llama3_json (Llama 3.x JSON calls); passed to the env as tool_format."""
    teacher_timeout_s: float = 60.0
    """Served teacher: seconds per request before it counts as a timeout (and is retried)."""
    teacher_max_retries: int = 6
    """Served teacher: retries of a request on 429, 5xx, timeouts and malformed replies (exponential
    backoff with jitter, the server's Retry-After honoured); then the run stops with a checkpoint."""
    teacher_concurrency: int = 8
    """Served teacher: requests in flight at once."""
    teacher_max_requests: int = 0
    """Served teacher: the run's request budget (0 = unlimited); spent, the run stops with a checkpoint."""
    teacher_max_tokens: int = 0
    """Served teacher: the run's token budget, prompt + completion (0 = unlimited)."""
    teacher_price_in: float = 0.0
    """Served teacher: US dollars per million prompt tokens (for teacher/cost_usd)."""
    teacher_price_out: float = 0.0
    """Served teacher: US dollars per million completion tokens."""
    teacher_cache: bool = True
    """Served teacher: keep every reply in RUN/teacher_cache.sqlite, keyed by the exact request, so
    a resumed run does not pay twice."""
    teacher_api_key_env: str = "OPENAI_API_KEY"
    """Served teacher: the environment variable holding the API key (none needed for a local server)."""
    sandbox: str = "auto"
    """Tool-code sandbox: auto (the strongest this machine allows; `agentopd doctor` says which)
    or strict (refuse to run model-written code without namespaces)."""
    env_pool: str = "threads"
    """Where rollouts' envs live and step: threads (this process) or ray (Ray actors; the ray
    extra, or pip install 'ray>=2.40'; a running Ray or RAY_ADDRESS is used, else a local one
    starts). Under ray an env id must resolve in the workers: agentopd/*, module:EnvId or class:."""
    env_step_timeout: float = 300.0
    """Seconds an env step may take before its episode ends with stop reason error and the rest
    go on (the env pool's backstop over the tools' own limits; 0 = none)."""

    def resolved_loss(self) -> str:
        if self.loss != "auto":
            return self.loss
        return "dagger" if self.teacher == "oracle" else "reverse_kl_pg"

    def env_kwargs(self) -> dict[str, str]:
        """Keyword arguments for `make_env` (none by default, so an env of yours need not take them)."""
        return {"tool_format": self.tool_format} if self.tool_format != "hermes" else {}

    def served_options(self, run_dir: str) -> ServedOptions:
        """How this run talks to a served teacher."""
        return ServedOptions(self.teacher_timeout_s, self.teacher_max_retries, self.teacher_concurrency,
                             self.teacher_max_requests, self.teacher_max_tokens, self.teacher_price_in,
                             self.teacher_price_out,
                             f"{run_dir}/teacher_cache.sqlite" if self.teacher_cache else None,
                             self.teacher_api_key_env, self.max_new_tokens)

    def optim_config(self) -> OptimConfig:
        """The learner's settings (by name: the two dataclasses order their fields differently)."""
        names = {f.name for f in dataclasses.fields(OptimConfig)}
        kw = {k: v for k, v in dataclasses.asdict(self).items() if k in names}
        if self.autocast == "auto":
            kw["autocast"] = "bf16" if self.compute_dtype() == "bfloat16" else "none"
        kw["max_tokens_per_micro"] = self.micro_tokens()
        kw["stage_steps"], kw["stage_lr"] = self.warm_start_steps, self.warm_start_lr
        return OptimConfig(**kw)

    def total_steps(self) -> int:
        """Optimizer steps of the whole run: the warm start, then the method."""
        return self.warm_start_steps + self.steps

    def micro_tokens(self) -> int:
        """`max_tokens_per_micro`, with 0 resolved for this run's device."""
        return self.max_tokens_per_micro or (2048 if self.device == "cpu" else 8192)

    def compute_dtype(self) -> str:
        """``float32`` or ``bfloat16``: `dtype` resolved on this run's device (measured once)."""
        import torch

        from agentopd.inference.dtypes import resolve_dtype

        return "bfloat16" if resolve_dtype(self.dtype, self.device) == torch.bfloat16 else "float32"

    def needs(self) -> Signal:
        """The teacher signal this run's method needs (decided before anything loads)."""
        loss = self.resolved_loss()
        if loss in TOPK_LOSSES:
            return Signal.TOPK_LOGPROBS if self.gkd_topk > 0 else Signal.FULL_LOGITS
        if loss in ("gopd", "sdpo"):
            return Signal.SAMPLED_LOGPROBS
        return {"reverse_kl_pg": ReverseKLPG.needs, "sft": Signal.DEMOS, "dagger": CrossEntropy.needs,
                "skill_sd": SkillSD.needs}[loss]

    def validate(self) -> None:
        """One-line errors for impossible configs, each naming what would work."""
        loss = self.resolved_loss()
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; choose one of {LOSSES} or auto")
        kind = teacher_kind(self.teacher)
        gives = expand(kind.gives)
        need = self.needs()
        if need not in gives:
            works = [name for name in LOSSES if dataclasses.replace(self, loss=name).needs() in gives]
            what = ("teacher logprobs" if need in (Signal.FULL_LOGITS, Signal.TOPK_LOGPROBS, Signal.SAMPLED_LOGPROBS)
                    else "text relabels of the student's states" if need == Signal.TEXT else "demonstrations")
            raise ValueError(
                f"loss {loss} needs {what} ({need.value}), which teacher {self.teacher!r} does not give "
                f"({', '.join(sorted(s.value for s in kind.gives))}): use --teacher "
                f"{' or '.join(teachers_giving(need))}, or with this teacher --loss {' or '.join(works)}")
        if loss == "gkd" and self.gkd_lambda < 1.0 and Signal.DEMOS not in gives:
            raise ValueError(f"gkd_lambda < 1 samples teacher-generated episodes: needs a teacher that "
                             f"plays them ({' or '.join(teachers_giving(Signal.DEMOS))}), not {self.teacher!r}")
        if self.gkd_topk < 0 or (self.gkd_topk > 0 and loss not in TOPK_LOSSES):
            raise ValueError(f"gkd_topk must be >= 0, and > 0 only with --loss {' / '.join(TOPK_LOSSES)}")
        if loss == "sdpo" and self.teacher != "self":
            raise ValueError(f"sdpo distils from the student's own weights given feedback or a successful sibling: "
                             f"use --teacher self, not {self.teacher!r}")
        if loss == "sdpo" and self.episodes_per_step % self.group_size:
            raise ValueError(f"sdpo plays group_size={self.group_size} episodes per task: episodes_per_step "
                             f"({self.episodes_per_step}) must be a multiple of it")
        if not (self.gopd_ref == "start" or (self.gopd_ref.startswith("hf:") and len(self.gopd_ref) > 3)):
            raise ValueError(f"gopd_ref {self.gopd_ref!r}: use start or hf:<model>")
        if self.tip_ratio and loss in ("sft", "dagger", "skill_sd", "sdpo"):
            raise ValueError(f"tip_ratio selects tokens of the student's own episodes for a logit loss: use it with "
                             f"reverse_kl_pg, gkd, akl, todi, eopd or gopd, not {loss}")
        if self.tip_ratio and self.tip_gamma and Signal.FULL_LOGITS not in gives and self.needs() != Signal.TOPK_LOGPROBS:
            raise ValueError("tip_gamma > 0 weights tokens by the teacher-student JSD, which needs the teacher's "
                             "distribution: use a logit teacher (self, hf:<model>), --gkd-topk with a top-k loss, "
                             "or --tip-gamma 0")
        if self.max_turns < 0:
            raise ValueError("max_turns must be >= 0 (0 = the env's turn budget)")
        if self.overlap_rollouts and parse_spec(self.student).backend == "vllm":
            raise ValueError("overlap_rollouts with a vllm: student is not supported yet (only the hf sampler's "
                             "own copy is tested in a background thread): use an hf: student, or drop the flag")
        if self.overlap_rollouts and loss not in OVERLAP_LOSSES:
            raise ValueError(f"overlap_rollouts trains on episodes one step stale, which the on-policy objectives' "
                             f"importance ratio corrects: use it with --loss {' / '.join(OVERLAP_LOSSES)}, not {loss}")
        if self.steps < 1 or self.episodes_per_step < 1:
            raise ValueError("steps and episodes_per_step must be >= 1")
        if self.curriculum != "none" and loss not in ("reverse_kl_pg", "gkd", "dagger"):
            raise ValueError(f"curriculum {self.curriculum} shapes the student's own episodes: use it with "
                             f"--loss reverse_kl_pg (TCOD), gkd or dagger, not {loss}")
        if self.curriculum == "kl" and loss not in ("reverse_kl_pg", "gkd"):
            raise ValueError("curriculum kl widens its window by the teacher KL at the frontier turn: it needs a "
                             "logit teacher (--loss reverse_kl_pg or gkd), or use --curriculum f2b")
        if not (self.skill_writer in ("rules", "self") or self.skill_writer.startswith("hf:")):
            raise ValueError(f"skill_writer {self.skill_writer!r}: use rules, self or hf:<model>")
        if loss == "skill_sd" and self.teacher != "self":
            raise ValueError(f"skill_sd distils from the student's own weights given a skill card: use "
                             f"--teacher self, not {self.teacher!r}")
        if loss == "skill_sd" and self.episodes_per_step % self.group_size:
            raise ValueError(f"skill_sd plays group_size={self.group_size} episodes per task: episodes_per_step "
                             f"({self.episodes_per_step}) must be a multiple of it")
        if self.warm_start_from == "teacher" and self.warm_start_steps and not self.teacher.startswith("hf:"):
            raise ValueError("warm_start_from teacher needs an hf:<model> teacher to play demonstrations; "
                             "use --warm-start-from oracle")
        if self.teacher.startswith("openai:") and self.teacher_temperature != 1.0:
            raise ValueError("a served teacher's prompt logprobs are at temperature 1: use --teacher-temperature 1 "
                             "with openai:<model>@<base_url>")
        if parse_spec(self.student).backend not in ("hf", "vllm"):
            raise ValueError("the learner trains an hf:<model> student (vllm:<model>: the same, sampled by vLLM)")
        self._check_ranges()

    def _check_ranges(self) -> None:
        """Every numeric and choice field in its range: a bad value is refused before any model
        loads or any file is written (--ckpt-every 0 once crashed after a whole step)."""
        checks: list[tuple[bool, str]] = [
            (self.lr > 0, "lr must be > 0"),
            (self.warm_start_steps >= 0, "warm_start_steps must be >= 0"),
            (self.warm_start_lr > 0, "warm_start_lr must be > 0"),
            (self.warm_start_episodes >= 0, "warm_start_episodes must be >= 0 (0 = episodes_per_step)"),
            (self.warm_start_from in ("oracle", "teacher"),
             f"warm_start_from {self.warm_start_from!r}: use oracle or teacher"),
            (self.teacher_temperature > 0, "teacher_temperature must be > 0"),
            (self.curriculum in CURRICULA, f"curriculum {self.curriculum!r}: use one of {', '.join(CURRICULA)}"),
            (self.curriculum_every >= 1, "curriculum_every must be >= 1"),
            (self.curriculum_max_window >= 0, "curriculum_max_window must be >= 0 (0 = the env's turn budget)"),
            (self.curriculum_kl_threshold > 0, "curriculum_kl_threshold must be > 0"),
            (self.group_size >= 1, "group_size must be >= 1"),
            (self.skill_kl_weight >= 0, "skill_kl_weight must be >= 0"),
            (self.skill_ucb_c >= 0, "skill_ucb_c must be >= 0"),
            (self.warmup_steps >= 0, "warmup_steps must be >= 0"),
            (self.schedule in ("constant", "cosine"), f"schedule {self.schedule!r}: use constant or cosine"),
            (self.weight_decay >= 0, "weight_decay must be >= 0"),
            (self.grad_clip >= 0, "grad_clip must be >= 0 (0 disables clipping)"),
            (self.max_tokens_per_micro >= 0, "max_tokens_per_micro must be >= 1 (or 0: the device's default)"),
            (self.autocast in ("auto", "none", "bf16"), f"autocast {self.autocast!r}: use auto, none or bf16"),
            (self.dtype in ("auto", "float32", "bfloat16"), f"dtype {self.dtype!r}: use auto, float32 or bfloat16"),
            (self.temperature >= 0, "temperature must be >= 0 (0 = greedy)"),
            (self.eval_temperature >= 0, "eval_temperature must be >= 0 (0 = greedy)"),
            (self.max_new_tokens >= 1, "max_new_tokens must be >= 1"),
            (self.max_context_tokens > self.max_new_tokens, "max_context_tokens must exceed max_new_tokens"),
            (self.kl_coef > 0, "kl_coef must be > 0"),
            (self.clip_eps >= 0, "clip_eps must be >= 0 (0 disables clipping)"),
            (0 <= self.discount <= 1, "discount must be in [0, 1]"),
            (0 <= self.gkd_beta <= 1, "gkd_beta must be in [0, 1] (0 forward KL, 1 reverse KL)"),
            (self.gkd_temperature > 0, "gkd_temperature must be > 0"),
            (0 <= self.gkd_lambda <= 1, "gkd_lambda must be in [0, 1]"),
            (self.eval_every >= 0, "eval_every must be >= 0 (0 disables held-out evals)"),
            (self.eval_n >= 1, "eval_n must be >= 1"),
            (self.eval_stop_repeats >= 0, "eval_stop_repeats must be >= 0 (0 = never stop a repeating episode)"),
            (self.ckpt_every >= 1, "ckpt_every must be >= 1"),
            (self.keep_checkpoints >= 1, "keep_checkpoints must be >= 1"),
            (self.teacher_timeout_s > 0, "teacher_timeout_s must be > 0"),
            (self.teacher_max_retries >= 0, "teacher_max_retries must be >= 0"),
            (self.teacher_concurrency >= 1, "teacher_concurrency must be >= 1"),
            (self.teacher_max_requests >= 0, "teacher_max_requests must be >= 0 (0 = unlimited)"),
            (self.teacher_max_tokens >= 0, "teacher_max_tokens must be >= 0 (0 = unlimited)"),
            (self.teacher_price_in >= 0 and self.teacher_price_out >= 0, "teacher prices must be >= 0"),
            (self.renderer == "auto" or self.renderer in RENDERERS,
             f"renderer {self.renderer!r}: use auto, {', '.join(RENDERERS)}"),
            (self.tool_format in FORMATS, f"tool_format {self.tool_format!r}: use {', '.join(FORMATS)}"),
            (0 < self.akl_mu < 1, "akl_mu must be in (0, 1)"),
            (self.todi_beta > 0, "todi_beta must be > 0"),
            (self.eopd_fkl_coef >= 0, "eopd_fkl_coef must be >= 0"),
            (self.eopd_entropy_threshold >= 0, "eopd_entropy_threshold must be >= 0"),
            (self.gopd_lambda > 0, "gopd_lambda must be > 0"),
            (self.sdpo_ratio_cap > 0, "sdpo_ratio_cap must be > 0"),
            (0 <= self.tip_ratio <= 1, "tip_ratio must be in [0, 1] (0 = all tokens)"),
            (self.tip_alpha >= 0 and self.tip_gamma >= 0, "tip_alpha and tip_gamma must be >= 0"),
            (self.sandbox in ("auto", "strict"), f"sandbox {self.sandbox!r}: use auto or strict"),
            (self.env_step_timeout >= 0, "env_step_timeout must be >= 0 (0 = no limit)"),
            (_device_ok(self.device), f"device {self.device!r}: use cpu, cuda or cuda:<index>"),
            (not self.teacher_device or _device_ok(self.teacher_device),
             f"teacher_device {self.teacher_device!r}: use cpu, cuda or cuda:<index>"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(msg)
        check_env_pool(self.env_pool)  # an unknown pool, or ray without Ray installed (says how to install it)


def _device_ok(device: str) -> bool:
    return device == "cpu" or device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit())

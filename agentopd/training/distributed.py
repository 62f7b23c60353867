"""Data-parallel training under torchrun: FSDP2 shards, rank-split work, rank-0 writes.

`torchrun --nproc-per-node N -m agentopd train ...` starts N copies of the run; `init` reads
torchrun's ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` and joins the process group (gloo on the
CPU, nccl on CUDA). `shard` applies FSDP2 (`fully_shard`) to each decoder layer and then the
root, so parameters, gradients and AdamW's state are split across ranks. Each rank plays and
scores its slice of the step's episodes (`slice_of`), the learner averages the loss over the
step's *global* target tokens (`Learner.step`), and metrics are merged so every rank logs and
decides (curricula) on the same numbers; only rank 0 writes metrics and checkpoints, which are
full (unsharded) state in the single-process format, so a run resumes on any number of ranks.

A single process is ``World(0, 1)``: every helper here is then the identity, with no
process group.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


@dataclass(frozen=True)
class World:
    """This process's place in the run: rank `rank` of `size`."""

    rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        """Rank 0: the one that writes metrics, checkpoints and the console."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


SINGLE = World()


def from_env() -> World:
    """The world torchrun describes in the environment (a single process without torchrun)."""
    return World(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)))


def init(device: str) -> World:
    """Join torchrun's process group (once); a single process joins nothing."""
    world = from_env()
    if world.distributed and not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        if device.startswith("cuda"):
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(backend)
    return world


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def device_for(device: str) -> str:
    """``cuda`` means this rank's own GPU under torchrun."""
    if device == "cuda" and from_env().distributed:
        return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    return device


def shard(model, world: World):
    """FSDP2 over `world`: each decoder layer its own unit (one all-gather per layer in the
    forward, freed after), the root holding embeddings, final norm and a tied head."""
    if not world.distributed:
        return model
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    dev = next(model.parameters()).device
    mesh = init_device_mesh(dev.type, (world.size,))
    layers = getattr(getattr(model, "model", None), "layers", None)
    if layers is None:
        raise ValueError(f"{type(model).__name__}: no model.layers to shard; FSDP needs a decoder-layer list")
    for layer in layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def slice_of(n: int, world: World) -> list[int]:
    """The indices of a step's `n` episodes this rank plays: a contiguous block (so groups of
    a task stay together), sizes differing by at most one."""
    lo = world.rank * n // world.size
    hi = (world.rank + 1) * n // world.size
    return list(range(lo, hi))


def gather(items: Sequence[T], world: World) -> list[T]:
    """Every rank's `items`, concatenated in rank order, on every rank."""
    if not world.distributed:
        return list(items)
    parts: list[Any] = [None] * world.size
    dist.all_gather_object(parts, list(items))
    return [x for p in parts for x in p]


def all_sum(values: dict[str, float], world: World) -> dict[str, float]:
    """Per-key sums over ranks (a key missing on a rank counts 0 there)."""
    if not world.distributed:
        return dict(values)
    parts: list[Any] = [None] * world.size
    dist.all_gather_object(parts, dict(values))
    out: dict[str, float] = {}
    for p in parts:
        for k, v in p.items():
            out[k] = out.get(k, 0.0) + v
    return out


def all_max(value: float, world: World) -> float:
    if not world.distributed:
        return value
    t = torch.tensor([float(value)], dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def local(t):
    """A DTensor's value as a plain tensor (a reduction like the grad norm is replicated)."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def full_parameters(model) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, full tensor) for each parameter, one at a time, in the same order on every rank:
    a sharded parameter is all-gathered as it is reached (collective: every rank must iterate
    to the end), so streaming weights to a sampler never holds two copies of the model."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            yield name, local(p).detach()


def model_state(model, world: World) -> dict[str, Any]:
    """The full state dict, on the CPU (rank 0 only under FSDP; {} on other ranks)."""
    if not world.distributed:
        return {k: v.detach() for k, v in model.state_dict().items()}
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def optimizer_state(model, opt, world: World) -> dict[str, Any]:
    """AdamW's full state keyed by parameter name (the same form whatever the number of ranks,
    so a checkpoint resumes on any; {} on ranks other than 0 under FSDP)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(model, opt, options=StateDictOptions(full_state_dict=True,
                                                                         cpu_offload=world.distributed))


def load_optimizer_state(model, opt, state: dict[str, Any]) -> None:
    """Restore `optimizer_state`'s output (sharding it when the model is sharded); an older
    checkpoint's index-keyed state loads as before."""
    groups = state.get("param_groups") or [{"params": []}]
    if all(isinstance(k, int) for g in groups for k in g["params"]):
        opt.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(model, opt, optim_state_dict=state, options=StateDictOptions(full_state_dict=True))

"""Two gloo processes with FSDP2 take the same steps as one process on the same rows, and their
checkpoint resumes in one process (and one process's on two ranks) to the same weights."""

from __future__ import annotations

import copy
import os
import random
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from agentopd.core.rows import TrainRow
from agentopd.training import distributed, losses
from agentopd.training.learner import Learner, OptimConfig

CFG = OptimConfig(lr=5e-3, max_tokens_per_micro=60, warmup_steps=1, schedule="cosine")
STEPS = 3


def _rows(seed: int = 0) -> list[TrainRow]:
    """Seven rows of different lengths, some sharing a prefix (packing), so ranks get unequal
    token counts and micro-batch counts."""
    rng = random.Random(seed)
    system = [rng.randrange(5, 900) for _ in range(20)]
    rows = []
    for k in range(7):
        n = rng.randrange(8, 40)
        ids = (system if k % 2 else []) + [rng.randrange(5, 900) for _ in range(n)]
        mask = [0] * (len(ids) // 3) + [1] * (len(ids) - len(ids) // 3)
        rows.append(TrainRow(tuple(ids), tuple(mask), (0.0,) * len(ids), tuple(k if m else -1 for m in mask)))
    return rows


def ce(logits_NV, batch):
    sel = batch.mask != 0
    out = losses.cross_entropy(logits_NV[None], batch.target_ids[sel][None], batch.mask[sel][None])
    return out.loss, out.metrics


def _model(tokenizer):
    from helpers_models import tiny_model_from

    return tiny_model_from(tokenizer, seed=3, hidden=32)


def _worker(rank: int, size: int, port: int, out: str, tokenizer, start_from: str | None) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(size))
    torch.set_num_threads(1)
    world = distributed.init("cpu")
    try:
        if start_from:
            from transformers import AutoModelForCausalLM

            model = AutoModelForCausalLM.from_pretrained(start_from)
        else:
            model = _model(tokenizer)
        learner = Learner(distributed.shard(model, world), CFG, STEPS, pad_id=0, world=world)
        if start_from:
            learner.load_state(Path(start_from))
        rows = _rows()
        mine = [rows[i] for i in distributed.slice_of(len(rows), world)]
        metrics = []
        for _ in range(STEPS - learner.step_count):
            metrics.append(learner.step(mine, ce, on_policy=False))
            if learner.step_count == 2 and not start_from:
                learner.save(Path(out), tokenizer)
        weights = distributed.model_state(learner.model, world)
        if world.main:
            torch.save({"metrics": metrics, "weights": weights}, Path(out) / "result.pt")
    finally:
        distributed.shutdown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_ranks(tmp: Path, tokenizer, start_from: str | None = None) -> dict:
    tmp.mkdir(parents=True, exist_ok=True)
    mp.spawn(_worker, args=(2, _free_port(), str(tmp), tokenizer, start_from), nprocs=2, join=True)
    return torch.load(tmp / "result.pt", weights_only=False)


def _close(got: dict, want: dict) -> None:
    for k in want:
        if k == "lm_head.weight" and k not in got:
            continue  # tied to the embedding
        torch.testing.assert_close(got[k], want[k], atol=2e-6, rtol=1e-4, msg=k)


@pytest.mark.slow
def test_two_gloo_ranks_match_one_process_and_resume_across_sizes(tokenizer, tmp_path):
    torch.manual_seed(0)
    model = _model(tokenizer)
    single = Learner(copy.deepcopy(model), CFG, STEPS, pad_id=0)
    want = []
    for _ in range(STEPS):
        want.append(single.step(_rows(), ce, on_policy=False))
        if single.step_count == 2:
            single.save(tmp_path / "one", tokenizer)
    ref = {k: v.detach() for k, v in single.model.state_dict().items()}

    two = _two_ranks(tmp_path / "two", tokenizer)
    assert len(two["metrics"]) == STEPS
    for g, w in zip(two["metrics"], want):  # the loss over all ranks' tokens, not rank 0's
        assert g["learner/target_tokens"] == w["learner/target_tokens"]
        assert g["loss/ce"] == pytest.approx(w["loss/ce"], rel=1e-5)
        assert g["learner/grad_norm"] == pytest.approx(w["learner/grad_norm"], rel=1e-4)
    assert float(sum((ref[k] - model.state_dict()[k]).abs().sum() for k in ref)) > 0  # training moved them
    _close(two["weights"], ref)

    # the 2-rank checkpoint (step 2) resumes in one process: its third step lands on the same weights
    from transformers import AutoModelForCausalLM

    ckpt = tmp_path / "two" / "step_2"
    resumed = Learner(AutoModelForCausalLM.from_pretrained(ckpt), CFG, STEPS, pad_id=0)
    resumed.load_state(ckpt)
    assert resumed.step_count == 2
    last = resumed.step(_rows(), ce, on_policy=False)
    assert last["loss/ce"] == pytest.approx(want[2]["loss/ce"], rel=1e-5)
    assert last["learner/lr"] == pytest.approx(want[2]["learner/lr"])
    _close({k: v.detach() for k, v in resumed.model.state_dict().items()}, ref)

    # and the one-process checkpoint resumes on two ranks
    back = _two_ranks(tmp_path / "two_from_one", tokenizer, start_from=str(tmp_path / "one" / "step_2"))
    assert back["metrics"][0]["loss/ce"] == pytest.approx(want[2]["loss/ce"], rel=1e-5)
    _close(back["weights"], ref)

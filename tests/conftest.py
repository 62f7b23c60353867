"""Shared fixtures: the real SmolLM2 tokenizer and tiny models built from a config."""

from __future__ import annotations

import os

import pytest

# `--dtype auto` is fp32 in tests on every CPU (bf16 where the CPU has bf16 units otherwise): the
# exactness checks compare samplers against fp32 references; bf16 is tested with explicit dtypes.
os.environ.setdefault("AGENTOPD_AUTO_DTYPE", "float32")

import agentopd  # noqa: F401  (first: sets OMP_WAIT_POLICY before torch loads)


@pytest.fixture(scope="session")
def tokenizer():
    from agentopd.inference.models import load_tokenizer

    return load_tokenizer("smollm2-135m")


@pytest.fixture(scope="session")
def tiny_model(tokenizer):
    from helpers_models import tiny_model_from

    return tiny_model_from(tokenizer, seed=0)


@pytest.fixture()
def tiny_policy(tiny_model, tokenizer):
    from agentopd.inference.hf import HFPolicy

    return HFPolicy(tiny_model, tokenizer, max_batch=8)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory, tokenizer):
    """A tiny random model saved with the real tokenizer: an `hf:<dir>` student for recipe runs."""
    from helpers_models import tiny_model_from

    d = tmp_path_factory.mktemp("tiny")
    tiny_model_from(tokenizer, seed=0).save_pretrained(d)
    tokenizer.save_pretrained(d)
    return d

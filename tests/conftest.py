"""Shared fixtures: the real SmolLM2 tokenizer and tiny models built from a config."""

from __future__ import annotations

import pytest

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

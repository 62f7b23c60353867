"""Loss tests run on tiny tensors: one intra-op thread (more only adds wake-up latency)."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The tensors here are tiny; intra-op threads only add wake-up latency (ms per op)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

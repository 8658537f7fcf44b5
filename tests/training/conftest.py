"""Fixtures shared by the training tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread for a module, restored afterwards: its tensors are tiny, and on a
    busy 2-core machine OpenMP threads spin-wait for each other (measured: MobileFaceNet
    fwd+bwd 0.33 s on 1 thread vs 1.5 s on 2)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

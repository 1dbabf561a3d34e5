"""Shared fixtures: paths to ../shared, random non-zero parameters, small helpers."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")
# The suite runs as two pytest workers on two cores: one thread each, or the workers' threads wait on each other.
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
JAX_FIXTURES = SHARED / "fixtures" / "vit_jax"


def rel_err(a, b) -> float:
    a = np.asarray(a.detach().cpu() if isinstance(a, torch.Tensor) else a, dtype=np.float64)
    b = np.asarray(b.detach().cpu() if isinstance(b, torch.Tensor) else b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@torch.no_grad()
def randomize_(module: torch.nn.Module, seed: int = 0, scale: float = 0.1) -> torch.nn.Module:
    """Give every parameter random non-zero values (norm scales near 1), so no mistake hides behind a zero init."""
    gen = torch.Generator().manual_seed(seed)
    for name, p in module.named_parameters():
        noise = torch.randn(p.shape, generator=gen) * scale
        if name.endswith("weight") and p.dim() == 1 or "norm" in name and name.endswith("weight") or \
                name.endswith("gamma"):
            p.copy_(1.0 + noise)
        else:
            p.copy_(noise)
    return module


@pytest.fixture(scope="session")
def jax_fixtures() -> Path:
    assert JAX_FIXTURES.is_dir(), f"the JAX reference fixtures are missing: {JAX_FIXTURES}"
    return JAX_FIXTURES


@pytest.fixture
def images():
    gen = torch.Generator().manual_seed(123)
    return lambda b, h, w=None, c=3: torch.randn(b, c, h, w or h, generator=gen)

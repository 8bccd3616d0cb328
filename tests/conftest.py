"""Shared fixtures: scikit-learn's bundled digits, a small real dataset."""

from __future__ import annotations

import pytest
import torch
from sklearn.datasets import load_digits


@pytest.fixture(scope="session")
def digits():
    """Standardised 8x8 digits (1797 x 64) and labels, as float64 tensors."""
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x, dtype=torch.float64)
    x = (x - x.mean(0)) / (x.std(0) + 1e-3)
    return x, torch.tensor(y)

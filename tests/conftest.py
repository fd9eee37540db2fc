"""Shared fixtures: small generated data sets, made once per test session."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from components.generator import GeneratorConfig, drift_period, generate_transactions

SMALL = GeneratorConfig(n_customers=300, n_terminals=600, n_days=30, seed=11)


@pytest.fixture(scope="session")
def small_config() -> GeneratorConfig:
    return SMALL


@pytest.fixture(scope="session")
def small_frame() -> pd.DataFrame:
    """About 18k transactions over 30 days; treat as read-only (copy before changing)."""
    return generate_transactions(SMALL)


@pytest.fixture(scope="session")
def drifted_frame() -> pd.DataFrame:
    return generate_transactions(drift_period(SMALL, n_days=14))


def _creditcard_csv(path, n=200, seed=0) -> pd.DataFrame:
    """Write a file in the public credit-card layout: Time, V1..V28, Amount, Class."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"Time": np.sort(rng.integers(0, 172_800, n)).astype(float)})
    for i in range(1, 29):
        frame[f"V{i}"] = rng.normal(size=n)
    frame["Amount"] = rng.gamma(2, 40, n).round(2)
    frame["Class"] = (rng.random(n) < 0.02).astype(int)
    frame.to_csv(path, index=False)
    return frame


@pytest.fixture
def creditcard_csv():
    """A writer of credit-card-layout CSV files: ``creditcard_csv(path, n=200)``."""
    return _creditcard_csv

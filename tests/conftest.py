"""Shared set-up of the engine's tests: the hypothesis profile and the input domains.

Hypothesis runs with a small, derandomized budget so that the whole suite stays fast and CI is
reproducible; ``HYPOTHESIS_PROFILE=thorough`` asks for a longer search locally.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "chainrule",
    max_examples=8,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("thorough", max_examples=200, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "chainrule"))


@pytest.fixture
def rng():
    """A fixed-seed generator, fresh for every test (tests never depend on each other's draws)."""
    return np.random.default_rng(20240611)


@pytest.fixture(autouse=True)
def _numpy_errors_are_visible():
    """Tests that need NaN/Inf open their own ``np.errstate``; elsewhere an invalid value is a
    bug, so NumPy warns (and pytest reports it) instead of staying silent."""
    with np.errstate(divide="warn", over="warn", invalid="warn", under="ignore"):
        yield

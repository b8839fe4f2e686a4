"""Test configuration: hypothesis profiles and torch settings."""

from __future__ import annotations

import os

# The Hub tests' server speaks the git-LFS upload protocol, not Xet; the Hub client reads
# these when it is imported, and subprocesses inherit them.
os.environ["HF_HUB_DISABLE_XET"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"

import torch
from hypothesis import HealthCheck, settings

settings.register_profile(
    "dev",
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# CI runs the same examples every time, so a landing is never decided by luck.
settings.register_profile("ci", parent=settings.get_profile("dev"), derandomize=True)
settings.register_profile("thorough", parent=settings.get_profile("dev"), max_examples=300)
settings.load_profile(
    os.environ.get("CANON_HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev")
)

torch.set_num_threads(min(2, torch.get_num_threads()))

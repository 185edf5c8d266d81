"""Moved: the local runner lives in :mod:`surerank.batch.local_runner`, the Ray runner in
:mod:`surerank.batch.ray_runner` (``engine`` named three different things).  This alias keeps old imports
working and warns once."""

from __future__ import annotations

import warnings

from surerank.batch.local_runner import RankerConfig, run_local
from surerank.batch.ray_runner import RayOptions, ray_runtime_env, run_ray

warnings.warn("surerank.batch.engines moved to surerank.batch.local_runner and surerank.batch.ray_runner",
              DeprecationWarning, stacklevel=2)

__all__ = ["RankerConfig", "RayOptions", "ray_runtime_env", "run_local", "run_ray"]

"""What the runtime hands to model factories: shared services of one worker process."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from mlkube.serving.metrics import Metrics
from mlkube.serving.store import FeatureStore


class Sampler(Protocol):
    """Draws one Beta(alpha[i], beta[i]) variate per item (mlkube.native.BetaSampler)."""

    def sample(
        self,
        alpha: np.ndarray[Any, np.dtype[np.float64]],
        beta: np.ndarray[Any, np.dtype[np.float64]],
        out: np.ndarray[Any, np.dtype[np.float64]] | None = None,
    ) -> np.ndarray[Any, np.dtype[np.float64]]: ...


@dataclass(slots=True)
class RuntimeContext:
    metrics: Metrics
    worker_id: int = 0
    # Overrides for tests and embedding; None means "build from the configuration".
    store: FeatureStore | None = None
    sampler: Sampler | None = None

"""Per-exchange random streams for a batch, so a batched run equals single runs draw for draw.

A batch of exchanges steps as one array program, but each exchange must see the random numbers
it would see alone: that is what makes a vector environment equal to its single environments
seeded alike, and what keeps one exchange's episode from depending on how many others share
the batch. :class:`BatchRandom` holds one ``numpy.random.Generator`` per exchange and draws
*grouped* samples: for the elements of a flat subset sorted by exchange, exchange ``e``'s
elements come from generator ``e``, in order. The loop runs over exchanges (a handful), never
over accounts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

FloatArray = np.ndarray[Any, np.dtype[np.float64]]
IntArray = np.ndarray[Any, np.dtype[np.int64]]


class BatchRandom:
    """One generator per exchange.

    Args:
        seeds: One seed per exchange (each a ``SeedSequence`` entropy value).
    """

    def __init__(self, seeds: Sequence[int]) -> None:
        self.generators = [np.random.default_rng(int(s)) for s in seeds]

    @classmethod
    def from_generators(cls, generators: Sequence[np.random.Generator]) -> BatchRandom:
        """Wrap existing generators (no copy: draws advance them)."""
        obj = cls([])
        obj.generators = list(generators)
        return obj

    @property
    def n_envs(self) -> int:
        """Number of exchanges (generators)."""
        return len(self.generators)

    def reseed(self, env: int, seed: int) -> None:
        """Give exchange ``env`` a fresh stream (its autoreset), leaving the others untouched."""
        self.generators[env] = np.random.default_rng(int(seed))

    def grouped(
        self,
        env_ids: ArrayLike,
        draw: Callable[[np.random.Generator, int], np.ndarray[Any, Any]],
    ) -> np.ndarray[Any, Any]:
        """Concatenate ``draw(generator_e, count_e)`` over exchanges, for ids sorted ascending.

        ``env_ids`` is the exchange of each element of a flat subset, sorted (row-major order
        of an ``(n_envs, n_accounts)`` mask is); the result aligns with it.
        """
        ids = np.asarray(env_ids, dtype=np.int64)
        counts = np.bincount(ids, minlength=self.n_envs)
        parts = [draw(self.generators[e], int(c)) for e, c in enumerate(counts) if c > 0]
        return np.concatenate(parts) if parts else np.zeros(0)

    def per_env(self, draw: Callable[[np.random.Generator], Any]) -> np.ndarray[Any, Any]:
        """``[draw(generator_e) for each exchange]`` as an array (one draw per exchange)."""
        return np.array([draw(g) for g in self.generators])

    def rows(
        self, draw: Callable[[np.random.Generator, int], np.ndarray[Any, Any]], width: int
    ) -> np.ndarray[Any, Any]:
        """An ``(n_envs, width)`` block whose row ``e`` is ``draw(generator_e, width)``."""
        return np.stack([draw(g, width) for g in self.generators])

    def random_grouped(self, env_ids: ArrayLike) -> FloatArray:
        """Uniforms in [0, 1), one per element, grouped by exchange."""
        return np.asarray(self.grouped(env_ids, lambda g, n: g.random(n)), dtype=np.float64)

    def poisson(self, lam: ArrayLike) -> IntArray:
        """One Poisson count per exchange with mean ``lam[e]``."""
        lam_arr = np.broadcast_to(np.asarray(lam, dtype=np.float64), (self.n_envs,))
        return np.array(
            [g.poisson(lam_arr[e]) for e, g in enumerate(self.generators)], dtype=np.int64
        )

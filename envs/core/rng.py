"""Per-exchange random streams for a batch, so a batched run equals single runs draw for draw.

A batch of exchanges steps as one program, but each exchange must see the random numbers it
would see alone: that is what makes a vector environment equal to its single environments
seeded alike, and what keeps one exchange's episode from depending on how many others share
the batch.

:class:`BatchStreams` holds, per exchange, a few named xoshiro256** streams as rows of one
``uint64`` array, each seeded from ``(seed, stream key)`` alone and advanced in place by the
compiled kernels (:mod:`fundgym.envs.core.random_nb`). Exchange ``e``'s draws depend on its own seed
only; :meth:`BatchStreams.reseed` restarts one exchange (a vector env's autoreset).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from fundgym.envs.core import random_nb

FloatArray = np.ndarray[Any, np.dtype[np.float64]]
U64Array = np.ndarray[Any, np.dtype[np.uint64]]

POPULATION_STREAM = 0
"""Stream index of the trader population's draws (exits, reactions, volume, the book at reset)."""
ARRIVAL_STREAM = 1
"""Stream index of arrivals alone (common random numbers: a fixed amount per tick)."""
STREAM_KEYS: tuple[int, ...] = (0x9091, 0xA221)
"""Key of each stream, in index order, mixed with the exchange's seed to seed that stream."""
N_STREAMS = len(STREAM_KEYS)

_MASK_64 = (1 << 64) - 1
_GOLDEN_64 = 0x9E3779B97F4A7C15


def splitmix64(x: int) -> tuple[int, int]:
    """One step of SplitMix64 (Steele, Lea and Flood 2014): ``(next state, output)``.

    The recommended seeder of xoshiro generators: it turns any 64-bit value, including
    neighbouring seeds 0, 1, 2, into well-mixed, independent-looking words.
    """
    x = (x + _GOLDEN_64) & _MASK_64
    z = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK_64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK_64
    return x, z ^ (z >> 31)


def _checked(value: Any, name: str) -> int:
    """``value`` as an ``int`` in ``[0, 2**64)``; a bool, float or string is refused."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name} must be an integer in [0, 2**64), got {value!r}")
    if not 0 <= int(value) <= _MASK_64:
        raise ValueError(f"{name} must be an integer in [0, 2**64), got {value!r}")
    return int(value)


def stream_words(seed: int, key: int) -> tuple[int, int, int, int]:
    """The four xoshiro256** state words of stream ``key`` for ``seed``.

    SplitMix64 hashes the seed and the key separately, the two hashes are xored into one
    SplitMix64 state, and its next four outputs are the words (never all zero in practice;
    an all-zero result, which xoshiro cannot leave, is replaced by ``(1, 0, 0, 0)``).

    Raises:
        ValueError: ``seed`` or ``key`` is not an integer in ``[0, 2**64)``.
    """
    x = splitmix64(_checked(seed, "seed"))[1] ^ splitmix64(_checked(key, "key") ^ _GOLDEN_64)[1]
    words = []
    for _ in range(4):
        x, out = splitmix64(x)
        words.append(out)
    if not any(words):
        words[0] = 1
    return words[0], words[1], words[2], words[3]


class BatchStreams:
    """Per-exchange xoshiro256** streams: ``state[e, stream]`` holds exchange ``e``'s stream.

    Kernels receive :attr:`state` and draw from row ``[e, stream]`` with
    :mod:`fundgym.envs.core.random_nb`; the streams are :data:`POPULATION_STREAM` and
    :data:`ARRIVAL_STREAM`, keyed by :data:`STREAM_KEYS`.

    Args:
        seeds: One seed per exchange, each an integer in ``[0, 2**64)``.
    """

    def __init__(self, seeds: Sequence[int]) -> None:
        self.seeds = [_checked(s, "seed") for s in seeds]
        self.state: U64Array = np.zeros((len(self.seeds), N_STREAMS, 4), dtype=np.uint64)
        for e, seed in enumerate(self.seeds):
            self._seed_row(e, seed)

    def _seed_row(self, env: int, seed: int) -> None:
        for s, key in enumerate(STREAM_KEYS):
            self.state[env, s] = np.array(stream_words(seed, key), dtype=np.uint64)

    @property
    def n_envs(self) -> int:
        """Number of exchanges."""
        return len(self.seeds)

    def reseed(self, env: int, seed: int) -> None:
        """Restart exchange ``env``'s streams from ``seed`` (its autoreset); others untouched."""
        self.seeds[env] = _checked(seed, "seed")
        self._seed_row(env, self.seeds[env])

    def env(self, env: int) -> BatchStreams:
        """Exchange ``env``'s streams as a batch of one that *shares* this batch's state.

        Draws through the view advance exchange ``env``'s streams here too, so drawing one
        exchange's book at its reset leaves its streams where a batch of one would.
        """
        out = object.__new__(BatchStreams)
        out.seeds = [self.seeds[env]]
        out.state = self.state[env : env + 1]
        return out

    def take(self, rows: Sequence[int] | np.ndarray[Any, Any]) -> BatchStreams:
        """Exchanges ``rows``' streams as a batch of their own (a copy, in ``rows`` order).

        Draw through it, then :meth:`put` it back: the rows end where drawing them here one
        by one would leave them.
        """
        out = object.__new__(BatchStreams)
        idx = np.asarray(rows, dtype=np.int64)
        out.seeds = [self.seeds[int(e)] for e in idx]
        out.state = self.state[idx]
        return out

    def put(self, rows: Sequence[int] | np.ndarray[Any, Any], part: BatchStreams) -> None:
        """Write ``part`` (from :meth:`take` of the same ``rows``) back into its rows."""
        self.state[np.asarray(rows, dtype=np.int64)] = part.state

    def copy(self) -> BatchStreams:
        """An independent copy (same seeds, same positions in every stream)."""
        out = object.__new__(BatchStreams)
        out.seeds = list(self.seeds)
        out.state = self.state.copy()
        return out

    def uniforms(self, env: int, stream: int, n: int) -> FloatArray:
        """The next ``n`` uniforms in ``[0, 1)`` of exchange ``env``'s ``stream``."""
        out = np.empty(n)
        random_nb.fill_uniforms(self.state, env, stream, out)
        return out

    def normals(self, env: int, stream: int, n: int) -> FloatArray:
        """The next ``n`` standard normals of exchange ``env``'s ``stream`` (two uniforms each)."""
        out = np.empty(n)
        random_nb.fill_normals(self.state, env, stream, out)
        return out

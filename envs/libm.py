"""The C library's ``exp``, ``expm1``, ``log`` and ``erfc``, element by element over arrays.

The compiled tick (:mod:`fundgym.envs.tick_kernels`) calls these functions from the C library, one
value at a time; numpy's own ``np.exp`` and ``np.log`` use vector code that differs from it in
the last bit for a few percent of inputs. The numpy reference of the tick (the market's
prices, the volatility estimate, the fund's option marks) calls the C library through these
wrappers instead, so the reference and the compiled tick agree to the bit and the tests can
say so. The arrays are ``(n_envs,)``, a handful of elements, where one C call per element
costs little.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

FloatArray = np.ndarray[Any, np.dtype[np.float64]]

_EXP = np.frompyfunc(math.exp, 1, 1)
_EXPM1 = np.frompyfunc(math.expm1, 1, 1)
_LOG = np.frompyfunc(math.log, 1, 1)
_ERFC = np.frompyfunc(math.erfc, 1, 1)


def _apply(ufunc: Any, x: ArrayLike) -> FloatArray:
    out: FloatArray = np.asarray(ufunc(np.asarray(x, dtype=np.float64)), dtype=np.float64)
    return out


def exp(x: ArrayLike) -> FloatArray:
    """``exp`` of every element (the C library's)."""
    return _apply(_EXP, x)


def expm1(x: ArrayLike) -> FloatArray:
    """``exp(x) - 1`` of every element, accurate near zero (the C library's)."""
    return _apply(_EXPM1, x)


def log(x: ArrayLike) -> FloatArray:
    """Natural logarithm of every element, > 0 (the C library's)."""
    return _apply(_LOG, x)


def erfc(x: ArrayLike) -> FloatArray:
    """Complementary error function of every element, accurate in both tails (the C library's)."""
    return _apply(_ERFC, x)

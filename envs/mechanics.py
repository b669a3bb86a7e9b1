"""Public, validated formula functions of a perpetual-futures exchange.

Every function is vectorised (numpy arrays or floats broadcast together, float64), money is in
USD, sizes are in base units and signed (positive = long). Each one validates its inputs and
then calls the single numpy implementation in :mod:`fundgym.envs.core.formulas`. The margin
engine's compiled kernels (:mod:`fundgym.envs.core.kernels`) restate the formulas on its hot path,
scalar by scalar in the same operation order, and the tests hold the two equal.

Which venue each rule follows:

============================  ==============================================================
function                      convention
============================  ==============================================================
``liquidation_price``         Binance USDⓈ-M one-way formula (with the bracket ``cum`` offset)
``liquidation_price_tiered``  the same, in the bracket the trigger falls in (tier table)
``bankruptcy_price``          dYdX v4 ``GetBankruptcyPriceInQuoteQuantums`` (one position)
``fillable_price``            dYdX v4 ``GetFillablePrice``
``insurance_fund_delta``      dYdX v4 ``GetLiquidationInsuranceFundDelta``
``adl_score``                 BitMEX auto-deleveraging rank (PnL% x or / effective leverage)
``auto_deleverage``           BitMEX/Binance greedy queue from the top rank
``socialized_loss_shares``    Drift v2 pro rata by base size (``drift``), or a haircut on
                              positive PnL (``profit_haircut``: Percolator, Hyperliquid)
============================  ==============================================================

Bad input (NaN or infinite values, negative rates, an MMR outside (0, 1), ...) raises a
``ValueError`` naming the argument and the offending value. An account already below zero
equity is a valid state, not an error.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from fundgym.envs.core import formulas
from fundgym.envs.core.params import MarginTiers

__all__ = [
    "adl_score",
    "auto_deleverage",
    "bankruptcy_price",
    "fillable_price",
    "insurance_fund_delta",
    "liquidation_price",
    "liquidation_price_tiered",
    "socialized_loss_shares",
]


def _as_float_array(name: str, value: ArrayLike) -> np.ndarray[Any, np.dtype[np.float64]]:
    """Convert ``value`` to float64, rejecting NaN and infinities with the argument's name."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric, got {value!r}") from exc
    bad = ~np.isfinite(arr)
    if bad.any():
        first = arr[bad].flat[0] if arr.ndim else arr.item()
        raise ValueError(f"{name} must be finite, got {first!r}")
    return arr


def _check_range(
    name: str,
    arr: np.ndarray[Any, np.dtype[np.float64]],
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """Raise ``ValueError`` naming ``name`` if any element lies outside the allowed interval."""
    ok = np.ones(arr.shape, dtype=bool)
    if low is not None:
        ok &= arr > low if low_open else arr >= low
    if high is not None:
        ok &= arr < high if high_open else arr <= high
    if not ok.all():
        left = ("(" if low_open else "[") + (str(low) if low is not None else "-inf")
        right = (str(high) if high is not None else "inf") + (")" if high_open else "]")
        first = arr[~ok].flat[0] if arr.ndim else arr.item()
        raise ValueError(f"{name} must lie in {left}, {right}, got {first!r}")


def _prices(name: str, value: ArrayLike) -> np.ndarray[Any, np.dtype[np.float64]]:
    arr = _as_float_array(name, value)
    _check_range(name, arr, low=0.0, low_open=True)
    return arr


def _mmr(value: ArrayLike) -> np.ndarray[Any, np.dtype[np.float64]]:
    arr = _as_float_array("mmr", value)
    _check_range("mmr", arr, low=0.0, high=1.0, low_open=True, high_open=True)
    return arr


def liquidation_price(
    collateral: ArrayLike,
    size: ArrayLike,
    entry_price: ArrayLike,
    mmr: ArrayLike,
    maintenance_offset_usd: ArrayLike = 0.0,
) -> Any:
    """Mark price at which equity equals the maintenance requirement ``mmr * |size| * mark``.

    Args:
        collateral: USD balance including realised PnL.
        size: Signed position in base units (positive = long).
        entry_price: Average entry price, USD per base unit (> 0).
        mmr: Maintenance margin ratio, in (0, 1).
        maintenance_offset_usd: Binance bracket ``cum`` offset (requirement
            ``= notional * mmr - cum``); 0 without tiers.

    Returns:
        The liquidation mark. NaN where ``size == 0`` (no position, no liquidation price).
        Clipped at 0 for longs: 0 means no positive price liquidates the position.

    Example:
        A 1 BTC long entered at 100,000 with 10,000 collateral and 5% MMR is liquidated at
        ``(100000 - 10000) / 0.95 = 94,736.84``.
    """
    q = _as_float_array("size", size)
    return formulas.liquidation_price(
        _as_float_array("collateral", collateral),
        q,
        _prices("entry_price", entry_price),
        _mmr(mmr),
        _as_float_array("maintenance_offset_usd", maintenance_offset_usd),
    )


def liquidation_price_tiered(
    collateral: ArrayLike,
    size: ArrayLike,
    entry_price: ArrayLike,
    mmr: ArrayLike,
    tiers: MarginTiers | None,
) -> Any:
    """Mark price at which the margin engine liquidates a one-position account under tiers.

    The engine's requirement for notional ``N`` in bracket ``k`` is ``(N mmr_k - cum_k) x
    mmr / tiers.base_mmr``; this finds the bracket the trigger falls in and solves
    :func:`liquidation_price` there.

    Args:
        collateral: USD balance including realised PnL.
        size: Signed position in base units (positive = long).
        entry_price: Average entry price (> 0).
        mmr: The controlled maintenance margin ratio, in (0, 1); with tiers it scales the
            table by ``mmr / tiers.base_mmr``.
        tiers: The bracket table, or ``None`` for a flat ``mmr``.

    Returns:
        The liquidation mark; NaN where ``size == 0``, clipped at 0 for longs.

    Example:
        A $3M long at 10x (30 BTC from 100,000 with 300,000) under Binance's BTCUSDT
        brackets triggers at ``(3e6 - 3e5 - 16,300) / (30 x 0.975) = 91,750.43`` (2.5%
        bracket), not at the flat 0.4% price 90,361.45.
    """
    if tiers is not None and not isinstance(tiers, MarginTiers):
        raise ValueError(f"tiers must be a MarginTiers or None, got {tiers!r}")
    return formulas.liquidation_price_tiered(
        _as_float_array("collateral", collateral),
        _as_float_array("size", size),
        _prices("entry_price", entry_price),
        _mmr(mmr),
        tiers,
    )


def bankruptcy_price(collateral: ArrayLike, size: ArrayLike, entry_price: ArrayLike) -> Any:
    """Price at which the account's equity is zero: ``entry - collateral / size``.

    The same price applies to any fraction of the position closed (dYdX v4's bankruptcy quote
    for a close of ``delta`` is ``|delta|`` times it when the requirement is proportional).

    Args:
        collateral: USD balance including realised PnL (may be negative).
        size: Signed position in base units.
        entry_price: Average entry price (> 0).

    Returns:
        USD per base unit; NaN where ``size == 0``. May be negative for an over-collateralised
        long (it can never go bankrupt).
    """
    return formulas.bankruptcy_price(
        _as_float_array("collateral", collateral),
        _as_float_array("size", size),
        _prices("entry_price", entry_price),
    )


def fillable_price(
    collateral: ArrayLike,
    size: ArrayLike,
    entry_price: ArrayLike,
    oracle_price: ArrayLike,
    mmr: ArrayLike,
    bankruptcy_adjustment: ArrayLike,
    spread_to_mmr: ArrayLike,
) -> Any:
    """dYdX v4's worst price a liquidation order may fill at, for a one-position account.

    Args:
        collateral: USD balance including realised PnL.
        size: Signed position in base units (non-zero for a meaningful price).
        entry_price: Average entry price (> 0).
        oracle_price: Oracle price the margin engine reads (> 0).
        mmr: Maintenance margin ratio, in (0, 1).
        bankruptcy_adjustment: ``bankruptcy_adjustment_ppm / 1e6``; dYdX requires >= 1.
        spread_to_mmr: ``spread_to_maintenance_margin_ratio_ppm / 1e6`` (>= 0).

    Returns:
        The fillable price; NaN where ``size == 0``.
    """
    ba = _as_float_array("bankruptcy_adjustment", bankruptcy_adjustment)
    _check_range("bankruptcy_adjustment", ba, low=1.0)
    smmr = _as_float_array("spread_to_mmr", spread_to_mmr)
    _check_range("spread_to_mmr", smmr, low=0.0)
    return formulas.fillable_price(
        _as_float_array("collateral", collateral),
        _as_float_array("size", size),
        _prices("entry_price", entry_price),
        _prices("oracle_price", oracle_price),
        _mmr(mmr),
        ba,
        smmr,
    )


def insurance_fund_delta(
    collateral: ArrayLike,
    size: ArrayLike,
    entry_price: ArrayLike,
    fill_size: ArrayLike,
    fill_price: ArrayLike,
    fee_rate: ArrayLike,
) -> Any:
    """Signed USD to the insurance fund for one liquidation fill, as dYdX v4 computes it.

    Args:
        collateral: USD balance of the liquidated account, including realised PnL.
        size: Its signed position before the fill.
        entry_price: Its average entry price (> 0).
        fill_size: Signed base units the fill changes the position by: opposite in sign to
            ``size`` and no larger in magnitude (a sell of 0.1 BTC from a long is ``-0.1``).
        fill_price: Execution price (> 0).
        fee_rate: Maximum liquidation fee as a fraction of fill notional (>= 0).

    Returns:
        Positive: the fee, ``min(fee_rate * notional, surplus above bankruptcy)``. Negative:
        the shortfall the fund pays when the fill is worse than the bankruptcy price.
    """
    q = _as_float_array("size", size)
    fs = _as_float_array("fill_size", fill_size)
    q_b, fs_b = np.broadcast_arrays(q, fs)
    wrong_side = (fs_b != 0.0) & ((q_b == 0.0) | (np.sign(fs_b) == np.sign(q_b)))
    if wrong_side.any():
        raise ValueError(
            "fill_size must be opposite in sign to size (a liquidation reduces the position), "
            f"got fill_size={fs_b[wrong_side].flat[0]!r} for size={q_b[wrong_side].flat[0]!r}"
        )
    too_big = np.abs(fs_b) > np.abs(q_b) * (1.0 + 1e-12)
    if too_big.any():
        raise ValueError(
            "fill_size must not exceed the position in magnitude, "
            f"got fill_size={fs_b[too_big].flat[0]!r} for size={q_b[too_big].flat[0]!r}"
        )
    rate = _as_float_array("fee_rate", fee_rate)
    _check_range("fee_rate", rate, low=0.0)
    return formulas.insurance_fund_delta(
        _as_float_array("collateral", collateral),
        q,
        _prices("entry_price", entry_price),
        fs,
        _prices("fill_price", fill_price),
        rate,
    )


def adl_score(
    collateral: ArrayLike, size: ArrayLike, entry_price: ArrayLike, mark_price: ArrayLike
) -> Any:
    """BitMEX's auto-deleveraging ranking score.

    ``PnL% x effective leverage`` when in profit, ``PnL% / effective leverage`` otherwise, with
    ``PnL% = unrealised PnL / |entry notional|`` and ``effective leverage = |notional| /
    equity``. Higher scores are deleveraged first.

    Args:
        collateral: USD balance including realised PnL.
        size: Signed position in base units.
        entry_price: Average entry price (> 0).
        mark_price: Current mark (> 0).

    Returns:
        The score; ``-inf`` for accounts with no position or non-positive equity (they cannot
        be deleveraging counterparties).
    """
    return formulas.adl_score(
        _as_float_array("collateral", collateral),
        _as_float_array("size", size),
        _prices("entry_price", entry_price),
        _prices("mark_price", mark_price),
    )


def auto_deleverage(amount: ArrayLike, counterparty_sizes: ArrayLike, scores: ArrayLike) -> Any:
    """Base units closed per counterparty when ``amount`` base units must be offset.

    Greedy from the highest score (ties: earlier index first), each counterparty closing at
    most its own ``|size|``. Operates on the last axis, so a batch of exchanges
    (``amount`` shape ``(n_envs,)``, sizes ``(n_envs, n)``) is one call.

    Args:
        amount: Base units to offset (>= 0).
        counterparty_sizes: Positions of the eligible opposite-side accounts (sign ignored).
        scores: Their ranking scores (``-inf`` allowed, NaN not).

    Returns:
        Unsigned base units closed per counterparty, shaped like ``counterparty_sizes``.
    """
    amt = _as_float_array("amount", amount)
    _check_range("amount", amt, low=0.0)
    sizes = _as_float_array("counterparty_sizes", counterparty_sizes)
    sc = np.asarray(scores, dtype=np.float64)
    if np.isnan(sc).any() or np.isposinf(sc).any():
        bad = sc[np.isnan(sc) | np.isposinf(sc)].flat[0]
        raise ValueError(f"scores must be finite or -inf, got {bad!r}")
    if sc.shape != sizes.shape:
        raise ValueError(
            f"scores must have the shape of counterparty_sizes {sizes.shape}, got {sc.shape}"
        )
    return formulas.auto_deleverage(amt, sizes, sc)


def socialized_loss_shares(
    loss: ArrayLike,
    sizes: ArrayLike,
    upnl_usd: ArrayLike | None = None,
    equity_usd: ArrayLike | None = None,
    convention: str = "drift",
    mark: ArrayLike | None = None,
) -> Any:
    """Each bearer's charge for an uncovered ``loss``, by ``convention``.

    Pass only the accounts that may bear it (the margin engine excludes those it is
    liquidating).

    Args:
        loss: USD to share (>= 0); one per exchange when ``sizes`` is 2-D.
        sizes: Signed positions of the bearers.
        upnl_usd: Their unrealised PnL, USD (needed by ``profit_haircut``).
        equity_usd: Their equity, USD; when given, no charge exceeds ``max(equity, 0)``.
        convention: ``"drift"`` (pro rata by ``|size|``, Drift's convention) or
            ``"profit_haircut"`` (pro rata by positive PnL, each charge capped by that PnL:
            Percolator, Hyperliquid).
        mark: Price, one per exchange; when given, positions worth less than
            ``formulas.DUST_NOTIONAL_USD`` at it are not billed.

    Returns:
        USD per account. The charges sum to at most ``loss``; the rest is unrecovered (all
        of it where nobody holds a weight).
    """
    lo = _as_float_array("loss", loss)
    _check_range("loss", lo, low=0.0)
    if convention not in formulas.SOCIALIZATION_CONVENTIONS:
        raise ValueError(
            f"convention must be one of {formulas.SOCIALIZATION_CONVENTIONS}, got {convention!r}"
        )
    if convention == "profit_haircut" and upnl_usd is None:
        raise ValueError("upnl_usd is needed by the profit_haircut convention")
    return formulas.socialized_loss_shares(
        lo,
        _as_float_array("sizes", sizes),
        None if upnl_usd is None else _as_float_array("upnl_usd", upnl_usd),
        None if equity_usd is None else _as_float_array("equity_usd", equity_usd),
        convention,
        None if mark is None else _prices("mark", mark),
    )

"""Unchecked, vectorised kernels of the exchange formulas.

These are the single implementation of every margin, bankruptcy, fund and deleveraging formula
in fundgym. :mod:`envs.mechanics` wraps them with input validation for users; the simulator's
hot path (:mod:`envs.core.step`) calls them directly, because validating every array on every
tick would cost more than the arithmetic itself.

Conventions (all functions):
    * float64, USD for money, base units for sizes, size signed (positive = long);
    * arguments broadcast like numpy ufuncs, so the same code serves a scalar, one exchange
      ``(n_accounts,)`` or a batch of exchanges ``(n_envs, n_accounts)``;
    * "collateral" is the account's USD balance including realised PnL; with entry price ``e``
      the quote balance in dYdX's sense is ``collateral - size * e``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.float64]


def equity(collateral: ArrayLike, size: ArrayLike, entry_price: ArrayLike, mark: ArrayLike) -> Any:
    """Account equity (dYdX's TNC for one position): collateral plus unrealised PnL at ``mark``."""
    return np.add(collateral, np.multiply(size, np.subtract(mark, entry_price)))


def bankruptcy_price(collateral: ArrayLike, size: ArrayLike, entry_price: ArrayLike) -> Any:
    """Price at which equity is zero: ``e - c / q``; NaN where ``size == 0``.

    Follows dYdX v4 ``GetBankruptcyPriceInQuoteQuantums``: with one position and a maintenance
    requirement proportional to size, the bankruptcy quote for closing ``delta`` is
    ``|delta| * (e - c / q)`` whatever fraction is closed, so one price serves partial fills.
    """
    c = np.asarray(collateral, dtype=np.float64)
    q = np.asarray(size, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        out = np.subtract(entry_price, c / q)
    return np.where(q == 0.0, np.nan, out)[()]


def liquidation_price(
    collateral: ArrayLike,
    size: ArrayLike,
    entry_price: ArrayLike,
    mmr: ArrayLike,
    maintenance_offset_usd: ArrayLike = 0.0,
) -> Any:
    """Mark at which equity equals the maintenance requirement; NaN where ``size == 0``.

    Solves ``c + q (m - e) = mmr |q| m - cum`` for ``m``, which is Binance's one-way formula
    ``LP = (WB + cum - side Q EP) / (Q MMR - side Q)`` with ``cum`` the bracket offset
    (``maintenance_offset_usd``). A long whose result is ``<= 0`` cannot be liquidated by any
    positive price; the value is returned clipped at 0 for longs.
    """
    c = np.asarray(collateral, dtype=np.float64)
    q = np.asarray(size, dtype=np.float64)
    side = np.sign(q)
    with np.errstate(divide="ignore", invalid="ignore"):
        lp = (q * np.asarray(entry_price) - c - maintenance_offset_usd) / (
            q * (1.0 - side * np.asarray(mmr))
        )
    lp = np.where(q > 0.0, np.maximum(lp, 0.0), lp)
    return np.where(q == 0.0, np.nan, lp)[()]


def fillable_price(
    collateral: ArrayLike,
    size: ArrayLike,
    entry_price: ArrayLike,
    oracle_price: ArrayLike,
    mmr: ArrayLike,
    bankruptcy_adjustment: ArrayLike,
    spread_to_mmr: ArrayLike,
) -> Any:
    """dYdX v4 ``GetFillablePrice``: the worst price a liquidation order may fill at.

    ``ABR = clamp(BA * (1 - TNC / TMMR), 0, 1)`` and ``FP = (PNNV - ABR * SMMR * PMMR) / PS``,
    with TNC the equity and TMMR = PMMR the maintenance requirement at the oracle price (one
    position per account), PNNV = ``size * oracle``. NaN where ``size == 0``.
    """
    q = np.asarray(size, dtype=np.float64)
    o = np.asarray(oracle_price, dtype=np.float64)
    tnc = equity(collateral, q, entry_price, o)
    pmmr = np.asarray(mmr) * np.abs(q) * o
    with np.errstate(divide="ignore", invalid="ignore"):
        abr = np.clip(np.asarray(bankruptcy_adjustment) * (1.0 - tnc / pmmr), 0.0, 1.0)
        fp = (q * o - abr * np.asarray(spread_to_mmr) * pmmr) / q
    return np.where(q == 0.0, np.nan, fp)[()]


def bankruptcy_value(
    collateral: ArrayLike, size: ArrayLike, entry_price: ArrayLike, close_base: ArrayLike
) -> Any:
    """``close_base * bankruptcy_price``, computed without dividing by ``size``.

    Equal to ``b * e - sign(q) * c * (b / |q|)`` for ``b = close_base`` (unsigned): the fraction
    ``b / |q|`` stays in [0, 1] however small the position, where ``c / q`` would overflow to
    infinity for a dust position. This is the quote a partial close must receive (dYdX's ``BQ``).
    """
    q = np.asarray(size, dtype=np.float64)
    b = np.asarray(close_base, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(q != 0.0, b / np.abs(q), 0.0)
    return (b * np.asarray(entry_price) - np.sign(q) * np.asarray(collateral) * frac)[()]


def insurance_fund_delta(
    collateral: ArrayLike,
    size: ArrayLike,
    entry_price: ArrayLike,
    fill_size: ArrayLike,
    fill_price: ArrayLike,
    fee_rate: ArrayLike,
) -> Any:
    """dYdX v4 ``GetLiquidationInsuranceFundDelta`` for one liquidation fill.

    ``delta = fillQuote - BQ(fill)`` where ``BQ`` is the bankruptcy quote of the closed part,
    i.e. ``-fill_size * (fill_price - bankruptcy_price)`` (computed through
    :func:`bankruptcy_value`, so dust positions cannot overflow). Positive deltas are capped at
    ``fee_rate * |fill notional|`` (the fee never takes the account past bankruptcy); negative
    deltas are the shortfall the fund pays. Zero where ``fill_size == 0``.
    """
    fs = np.asarray(fill_size, dtype=np.float64)
    fp = np.asarray(fill_price, dtype=np.float64)
    b = np.abs(fs)
    # -fs * fp is the signed fill quote; sign(-fs) = sign(size) for a reducing fill.
    raw = np.sign(-fs) * (b * fp - bankruptcy_value(collateral, size, entry_price, b))
    fee_cap = np.asarray(fee_rate) * b * fp
    delta = np.where(raw > 0.0, np.minimum(raw, fee_cap), raw)
    return np.where(fs == 0.0, 0.0, delta)[()]


def adl_score(
    collateral: ArrayLike, size: ArrayLike, entry_price: ArrayLike, mark_price: ArrayLike
) -> Any:
    """BitMEX auto-deleveraging rank score, for linear contracts.

    ``PnL% = q (m - e) / |q e|`` and ``EffLev = |q m| / (q m - q p_b) = |q| m / equity``;
    the score is ``PnL% * EffLev`` when ``PnL% > 0`` and ``PnL% / EffLev`` otherwise. Accounts
    with no position or with equity ``<= 0`` (already bankrupt, not candidates) score ``-inf``.
    """
    c = np.asarray(collateral, dtype=np.float64)
    q = np.asarray(size, dtype=np.float64)
    e = np.asarray(entry_price, dtype=np.float64)
    m = np.asarray(mark_price, dtype=np.float64)
    eq = equity(c, q, e, m)
    valid = (q != 0.0) & (eq > 0.0)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        pnl_frac = q * (m - e) / np.abs(q * e)
        eff_lev = np.abs(q) * m / eq
        score = np.where(pnl_frac > 0.0, pnl_frac * eff_lev, pnl_frac / eff_lev)
    return np.where(valid, score, -np.inf)[()]


def auto_deleverage(amount: ArrayLike, counterparty_sizes: ArrayLike, scores: ArrayLike) -> Any:
    """Base units closed per counterparty to offset ``amount``, greedily from the top score.

    Each counterparty closes ``min(|size|, what is still needed)``, in descending score order,
    ties broken by position in the array (stable sort). Vectorised with a sort and a cumulative
    sum instead of a loop: counterparty ``k`` in rank order closes
    ``clip(amount - cumsum_before_k, 0, |size_k|)``. Works on the last axis, so ``amount`` of
    shape ``(n_envs,)`` with sizes ``(n_envs, n)`` deleverages every exchange at once. Returns
    unsigned amounts with the shape of ``counterparty_sizes``; their total is
    ``min(amount, sum |size|)``.
    """
    sizes = np.abs(np.asarray(counterparty_sizes, dtype=np.float64))
    sc = np.asarray(scores, dtype=np.float64)
    amt = np.asarray(amount, dtype=np.float64)
    order = np.argsort(-sc, axis=-1, kind="stable")
    ranked = np.take_along_axis(sizes, order, axis=-1)
    # Exclusive running sum by shifting, not ``cumsum - ranked``: the subtraction cancels
    # catastrophically when a tiny position precedes a large one.
    before = np.zeros_like(ranked)
    np.cumsum(ranked[..., :-1], axis=-1, out=before[..., 1:])
    closed_ranked = np.clip(amt[..., None] - before, 0.0, ranked)
    closed = np.empty_like(closed_ranked)
    np.put_along_axis(closed, order, closed_ranked, axis=-1)
    return closed


def socialized_loss_shares(loss: ArrayLike, sizes: ArrayLike) -> Any:
    """Each account's share of ``loss``, pro rata by ``|size|`` (Drift's convention).

    Drift spreads an uncovered loss over open interest through the cumulative funding index,
    so both sides pay in proportion to base size. Works on the last axis; where no account has
    a position the shares are all zero and the caller must book the loss elsewhere.
    """
    w = np.abs(np.asarray(sizes, dtype=np.float64))
    total = w.sum(axis=-1, keepdims=True)
    lo = np.asarray(loss, dtype=np.float64)[..., None]
    with np.errstate(divide="ignore", invalid="ignore"):
        # Normalise first: ``lo * w`` would underflow for dust positions and lose the loss.
        shares = np.where(total > 0.0, lo * (w / total), 0.0)
    return shares

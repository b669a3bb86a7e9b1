"""Unchecked, vectorised numpy versions of the exchange formulas.

These are the reference implementation of every margin, bankruptcy, fund, deleveraging and
loss-sharing formula in fundgym. :mod:`fundgym.envs.mechanics` wraps them with input validation for
users; the observation and the trader population call them directly on whole arrays. The
margin engine's compiled kernels (:mod:`fundgym.envs.core.kernels`) restate the ones on its hot path
scalar by scalar, in the same operation order, so both give the same bits on the same inputs
(the tests compare them).

Conventions (all functions):
    * float64, USD for money, base units for sizes, size signed (positive = long);
    * arguments broadcast like numpy ufuncs, so the same code serves a scalar, one exchange
      ``(n_accounts,)`` or a batch of exchanges ``(n_envs, n_accounts)``;
    * "collateral" is the account's USD balance including realised PnL; with entry price ``e``
      the quote balance in dYdX's sense is ``collateral - size * e``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

if TYPE_CHECKING:
    from fundgym.envs.core.params import MarginTiers

FloatArray = NDArray[np.float64]

DUST_NOTIONAL_USD = 1.0
"""Positions worth less than this at mark are never billed a socialised loss.

No venue lets an account open a position this small (dYdX's smallest BTC order is worth about
$1), so such a position is a rounding residual of a partial close; under the ``drift``
convention it would otherwise bear a whole loss whenever it is the last position open."""

SOCIALIZATION_CONVENTIONS: tuple[str, ...] = ("profit_haircut", "drift")
"""Loss-sharing conventions, in the order of ``RiskParams.socialization_code``."""


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


def cross_leg_collateral(
    collateral: ArrayLike,
    size: ArrayLike,
    entry_price: ArrayLike,
    mark: ArrayLike,
    requirement_usd: ArrayLike,
) -> Any:
    """Each position's share of a cross account's collateral, for its bankruptcy price (dYdX v4).

    dYdX's bankruptcy quote for closing ``delta`` of one position of a multi-position
    subaccount, ``-DNNV - TNC x |DMMR| / TMMR``, apportions the account's equity ``TNC`` to
    the position by its share ``w_j = req_j / req`` of the maintenance requirement. As a
    one-position account, that equity is collateral ``c_j = w_j x TNC - u_j`` (``u_j`` the
    position's unrealised PnL at ``mark``), computed as
    ``w_j x c + (w_j x U_other - (1 - w_j) x u_j)`` so that an account with one open
    position gets exactly its collateral. :func:`bankruptcy_price` and
    :func:`bankruptcy_value` of ``(c_j, q_j, e_j)`` are then the position's; the ``c_j``
    sum to ``c``, so closing every position at its bankruptcy price leaves zero equity. With
    a flat MMR and one position this is dYdX's ``e - c / q`` exactly.

    Args:
        collateral: The account's collateral, shape ``S``.
        size: Positions, shape ``S + (M,)`` (markets on the last axis).
        entry_price: Same shape as ``size``.
        mark: Prices, broadcast against ``size``.
        requirement_usd: Each position's maintenance requirement, same shape as ``size``;
            their sum over markets must be > 0.

    Returns:
        ``c_j``, shape ``S + (M,)``: the formula of the margin engine's
        ``fundgym.envs.core.kernels._leg_collateral``.
    """
    q = np.asarray(size, dtype=np.float64)
    req = np.asarray(requirement_usd, dtype=np.float64)
    upnl = q * (np.asarray(mark, dtype=np.float64) - np.asarray(entry_price, dtype=np.float64))
    n_mk = q.shape[-1]
    other = np.zeros_like(upnl)
    for j in range(n_mk):
        for k in range(n_mk):
            if k != j:
                other[..., j] += upnl[..., k]
    w = req / req.sum(axis=-1, keepdims=True)
    c = np.asarray(collateral, dtype=np.float64)[..., None]
    return w * c + (w * other - (1.0 - w) * upnl)


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


def liquidation_price_tiered(
    collateral: ArrayLike,
    size: ArrayLike,
    entry_price: ArrayLike,
    mmr: ArrayLike,
    tiers: MarginTiers | None,
) -> Any:
    """Mark at which equity meets the tiered maintenance requirement; NaN where ``size == 0``.

    The requirement of notional ``N = |q| m`` in bracket ``k`` is ``(N mmr_k - cum_k) s`` with
    ``s = mmr / tiers.base_mmr`` (what the margin engine charges), so within bracket ``k`` the
    trigger is :func:`liquidation_price` with rate ``mmr_k s`` and offset ``cum_k s``. The
    bracket is found by evaluating the margin surplus ``c + q (m - e) - requirement`` at each
    bracket's floor price ``floor_k / |q|``: the surplus rises with the mark for a long and
    falls for a short (while ``mmr_k s < 1``), so the trigger lies in the last bracket whose
    floor is still on the liquidatable side. Without tiers this is :func:`liquidation_price`.

    Example: a $3M long at 10x (30 units from 100,000, collateral 300,000) under Binance's
    BTCUSDT brackets at their base MMR triggers at ``(3e6 - 3e5 - 16,300) / (30 x 0.975) =
    91,750.43``, in the 2.5% bracket; the flat 0.4% formula would say 90,361.45.
    """
    if tiers is None:
        return liquidation_price(collateral, size, entry_price, mmr)
    c, q, e, rate = np.broadcast_arrays(
        np.asarray(collateral, dtype=np.float64),
        np.asarray(size, dtype=np.float64),
        np.asarray(entry_price, dtype=np.float64),
        np.asarray(mmr, dtype=np.float64),
    )
    scale = rate / tiers.base_mmr
    abs_q = np.abs(q)
    bracket = np.zeros(q.shape, dtype=np.int64)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for k in range(1, len(tiers.floor_usd)):
            floor = tiers.floor_usd[k]
            surplus = (
                c + q * (floor / abs_q - e) - (floor * tiers.mmr[k] - tiers.cum_usd[k]) * scale
            )
            below = np.where(q > 0.0, surplus <= 0.0, surplus >= 0.0)
            bracket = np.where(below & (q != 0.0), k, bracket)
    rates = np.asarray(tiers.mmr)[bracket] * scale
    offsets = np.asarray(tiers.cum_usd)[bracket] * scale
    return liquidation_price(c, q, e, rates, offsets)


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


def socialized_loss_shares(
    loss: ArrayLike,
    sizes: ArrayLike,
    upnl_usd: ArrayLike | None = None,
    equity_usd: ArrayLike | None = None,
    convention: str = "drift",
    mark: ArrayLike | None = None,
) -> Any:
    """Each bearer's charge for ``loss``, by ``convention``; works on the last axis.

    * ``drift``: pro rata by ``|size|`` over both sides (Drift spreads an uncovered loss over
      open interest through the cumulative funding index).
    * ``profit_haircut``: pro rata by positive unrealised PnL (``upnl_usd``), each charge
      capped by that PnL (Percolator's equal haircut on profits; Hyperliquid: an account with
      no profit never bears it).

    With ``equity_usd`` each charge is also capped at ``max(equity, 0)``, so no bearer is
    pushed below zero; with ``mark`` positions worth less than :data:`DUST_NOTIONAL_USD` are
    not billed. What the caps hold back is not passed on: ``loss - charges.sum()`` is the
    unrecovered part (all of it where nobody has a weight). The margin engine applies the
    same rule (:mod:`fundgym.envs.core.kernels`) to the accounts it does not liquidate.
    """
    q = np.asarray(sizes, dtype=np.float64)
    if convention == "drift":
        w = np.abs(q)
    elif convention == "profit_haircut":
        if upnl_usd is None:
            raise ValueError("the profit_haircut convention needs upnl_usd")
        w = np.maximum(np.broadcast_to(np.asarray(upnl_usd, dtype=np.float64), q.shape), 0.0)
    else:
        raise ValueError(
            f"convention must be one of {SOCIALIZATION_CONVENTIONS}, got {convention!r}"
        )
    if mark is not None:
        notional = np.abs(q) * np.asarray(mark, dtype=np.float64)[..., None]
        w = np.where(notional >= DUST_NOTIONAL_USD, w, 0.0)
    total = w.sum(axis=-1, keepdims=True)
    lo = np.asarray(loss, dtype=np.float64)[..., None]
    with np.errstate(divide="ignore", invalid="ignore"):
        # Normalise first: ``lo * w`` would underflow for small weights and lose the loss.
        shares = np.where(total > 0.0, lo * (w / total), 0.0)
    if convention == "profit_haircut":
        shares = np.minimum(shares, w)
    if equity_usd is not None:
        cap = np.maximum(np.asarray(equity_usd, dtype=np.float64), 0.0)
        shares = np.minimum(shares, cap)
    return shares

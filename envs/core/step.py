"""One tick of the margin engine over a batch of exchanges: the order of operations.

``core_step`` marks every account to the price the margin engine reads, finds the liquidatable
ones, and runs the loss waterfall on them. Per exchange, in this order (dYdX v4 documents the
same sequence as "liquidation, then insurance fund, then deleveraging"):

0. **The margin check.** Equity is collateral plus unrealised PnL over every market (cross
   margin); the maintenance requirement sums ``mmr x |size| x mark`` over markets, or the
   Binance bracket table scaled by ``mmr / tiers.base_mmr``. An account is liquidatable when
   its requirement is positive and its equity is below it (dYdX ``IsLiquidatable``).
1. **The account's own margin.** A partial liquidation order closes at most
   ``max_liquidation_fraction`` of the position (at least ``min_liquidation_notional_usd``,
   small positions whole: dYdX) into the venue's book. The tick's orders are priced together
   by the impact model: the total sell (longs) and buy (shorts) notional of each exchange,
   at the book price, set one average fill price per side. A fill better than the bankruptcy
   price pays a fee ``min(fee rate x notional, surplus)`` (dYdX
   ``GetLiquidationInsuranceFundDelta``), split between fund and liquidator (Drift's split).
2. **The insurance fund** pays the shortfall of fills worse than bankruptcy, from what it can
   pay this tick (``fund_available_usd``) plus this tick's fee income: all fee income is
   counted first, then shortfalls are paid in account order; a payment that would take the
   fund below zero is not made in full: it pays what it holds and the rest goes on.
3. **Auto-deleveraging** (``fallback="adl"``): the part of a fill the fund cannot cover is not
   sent to the book; it is offset against opposite-side accounts at the bankrupt account's
   bankruptcy price, by the ``RiskParams.adl_policy`` rule (:mod:`fundgym.envs.core.adl`:
   BitMEX rank by default; Hyperliquid's queue at the mark; Drift pro rata; water-filling;
   risk pro rata). Counterparties are accounts not being liquidated that stay solvent when
   closed at that price (dYdX skips those that fail the collateral check). Bankrupt accounts
   of one side in one tick are offset as a batch: each closes at its own bankruptcy price and
   the counterparties at the batch's size-weighted bankruptcy price, so the cash matches
   exactly.
4. **Socialised loss** (``fallback="socialize"``, and whatever ADL cannot place for lack of
   eligible opposite positions): the book fills, and the uncovered loss is charged to the
   accounts not being liquidated, by the ``RiskParams.socialization`` convention:
   ``profit_haircut`` (default) pro rata to positive unrealised PnL, each charge capped by
   that PnL (Percolator, Hyperliquid); ``drift`` pro rata to ``|size|`` over both sides
   (Drift's funding-index convention). Positions worth less than
   :data:`fundgym.envs.core.formulas.DUST_NOTIONAL_USD` are never billed, and no charge takes a
   bearer's equity below zero.
5. **The exchange** absorbs what nobody can bear (``unrecovered_usd``).

This is the ``partial`` liquidation mode (``RiskParams.liquidation_mode``, the default). The
venue modes (``binance``, ``dydx_v4``, ``hyperliquid``, ``bitmex``) keep the stages' order but
run the tick as sub-steps with their venue's order sizes, limit prices and takeovers, each
sub-step priced on its own flow through the square-root book and, under ``dydx_v4`` and
``hyperliquid``, at the oracle and book price of its moment on the path from the previous
tick's (``prev_mark``, ``prev_book_price``): :mod:`fundgym.envs.core.liquidation` documents
them and ``docs/liquidation.md`` tabulates the waterfall per mode.

Every sum is the exchange's own: no running total crosses exchanges, so an exchange in a
batch steps bit for bit as it does alone. The per-account work runs in the compiled kernels
of :mod:`fundgym.envs.core.kernels`; this module validates, prices the flow through the impact model
between the scan and the waterfall, and books the fund's flows into ``state.fund`` (the
kernels never write the fund). The step updates ``state`` in place: at 1e5 accounts a
functional copy of every array per tick would cost more than the step itself.

**Several markets** (``M > 1``, the ``partial`` mode only). An account slot is one
cross-margined account; an isolated position is a slot of its own. A liquidatable account
sends an order in every market where it holds a position (a *leg*), each sized by the
partial rule on that position and priced by that market's book and flow (``impact`` per
market). Each leg's bankruptcy price apportions the account's equity by the leg's share of
its maintenance requirement (dYdX v4), so closing every leg at its bankruptcy price leaves
zero equity. The fund pays the legs' shortfalls in account then market order; ADL runs per
market against that market's opposite positions, counterparties judged on their whole cross
account; socialisation charges each market's loss to that market's bearers, capped by their
cross-account equity. ``StepEvents.market_flow_usd`` reports each market's flow; the
per-exchange columns are sums over markets. With one market the step is the single-market
code, unchanged. ``docs/markets.md`` ("The margin engine across markets") has the formulas.

**Collateral assets** (``state.n_collateral = K > 0``). An account's equity counts each
asset it posts at ``units x price x (1 - haircut)``, at the price the caller passes
(``collateral_price``: the venue's book, an external index or the redemption value, the
caller's choice). A state with collateral assets runs the several-markets path, one market
included. A liquidated account's assets are all seized and sold before its legs' bankruptcy
accounting, at ``price x (1 - haircut)`` (the haircut is the venue's conversion discount),
into its USD collateral; the haircut's value, ``units x price x haircut``, goes to the
outside counterparty that buys them (its cash). A depeg that leaves the account below zero
then yields bad debt for the fund, ADL and socialisation exactly as a price move does.
Accounts that are not liquidated keep their assets; ADL judges and socialisation caps them on
their equity with the assets counted. ``docs/markets.md`` ("Collateral assets in the margin
engine") has the formulas and the price choice's failure modes.

**Shared or segmented funds, capped payments** (the cross path). ``fund_mode="shared"`` (the
default) pays every market's legs from ``state.fund``. ``fund_mode="segmented"`` pays each
leg from the cash segment of its market's group (``fund_groups``, market -> segment of
``state.fund_segments_usd``), which also earns that market's fee income; a segment never pays
another group's legs unless the venue allows transfers (``fund_transfer_cap_usd``, per tick;
forbidden by default), so a thin alt's crash cannot drain the BTC segment. ``fund_cap_usd``
(per market, ``inf`` for none; Drift's tier caps) bounds what a market's legs are paid per
tick, whatever the fund holds. What a cap or an empty segment refuses is uncovered like any
shortfall: ADL, socialisation, the exchange. Segments or finite caps run the cross path,
one market included. ``docs/markets.md`` ("Shared and segmented funds") has the rules.

**Per-market margin** (the cross path). Real venues ask more margin of a thin alt than of
BTC. ``market_mmr_mult`` (``(M,)`` or ``(E, M)``, each > 0) scales market ``j``'s
maintenance requirement: a position's requirement is the exchange's (flat ``mmr`` or the
tier table, as above) times ``market_mmr_mult[j]``. The scaled requirements are the ones the
cross path reads everywhere it reads one: the trigger (equity below their sum) and the legs'
apportioned collateral (each leg's share of the scaled sum), hence every bankruptcy price;
ADL and socialisation judge counterparties on equity alone and need no change. The default
(``None``) is all ones, bit for bit today's step. A multiple other than one runs the cross
path, one market included (the one-market kernels read one ``mmr``); so the venue modes,
which the cross path does not run, refuse it. :func:`market_requirements` gives each
position's scaled requirement, for :func:`~fundgym.envs.core.formulas.cross_leg_collateral`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import numpy as np
from numpy.typing import ArrayLike

from fundgym.envs.core import kernels, venue_cross
from fundgym.envs.core.events import EV_N_LIQUIDATIONS, N_EVENTS, StepEvents
from fundgym.envs.core.impact import ImpactModel, SqrtImpact
from fundgym.envs.core.liquidation import LIQ_DYDX_V4, LIQ_PARTIAL
from fundgym.envs.core.liquidators import liquidators_paid
from fundgym.envs.core.margin import maintenance_requirement
from fundgym.envs.core.params import (
    P_LIQ_FEE,
    P_LIQ_FUND_SHARE,
    P_LIQUIDATOR_MULT,
    W_ADL_FIRST,
    MarginTiers,
    RiskParams,
)
from fundgym.envs.core.vault import V_ACTIVE
from fundgym.envs.core.venue_cross import CROSS_VENUE_MODES
from fundgym.envs.fund.portfolio import AllocationParams, settle
from fundgym.envs.jit import kernel_array
from fundgym.envs.state import SimState, collateral_prices, marks_2d, per_asset

__all__ = ["StepEvents", "core_step", "margin_state", "market_requirements"]

FloatArray = np.ndarray[Any, np.dtype[np.float64]]
IntArray = np.ndarray[Any, np.dtype[np.int64]]

_DEFAULT_ALLOCATION = AllocationParams()
_TIER_CACHE: dict[int, tuple[MarginTiers | None, tuple[FloatArray, ...]]] = {}


def _tier_table(params: RiskParams) -> tuple[FloatArray, ...]:
    """``params.tier_table()``, remembered per tier table (the same object every tick)."""
    key = id(params.tiers)
    hit = _TIER_CACHE.get(key)
    if hit is not None and hit[0] is params.tiers:
        return hit[1]
    table = params.tier_table()
    _TIER_CACHE[key] = (params.tiers, table)
    return table


def _marks(mark: ArrayLike, n_envs: int, n_markets: int) -> FloatArray:
    """``mark`` as a C-contiguous ``(E, M)`` float64 array (a view when it already is one)."""
    if (
        isinstance(mark, np.ndarray)
        and mark.dtype == np.float64
        and mark.flags.c_contiguous
        and mark.shape in ((n_envs,), (n_envs, n_markets))
        and (mark.ndim == 2 or n_markets == 1)
    ):
        return mark.reshape(n_envs, n_markets)
    return marks_2d(mark, n_envs, n_markets)


def _depth(impact: ImpactModel, n_envs: int) -> FloatArray:
    """The square-root book's depth per exchange, ``(E,)`` (ones for another model: unread)."""
    if not isinstance(impact, SqrtImpact):
        return np.ones(n_envs)
    depth = np.asarray(impact.depth_usd_per_pct, dtype=np.float64)
    return kernel_array(depth, (n_envs,))


def _max_impact(impact: ImpactModel) -> float:
    """The square-root book's cap on a walk's move (1.0 for another model: unread)."""
    return float(impact.max_impact_frac) if isinstance(impact, SqrtImpact) else 1.0


def _path_start(name: str, value: ArrayLike | None, n_envs: int) -> FloatArray:
    """``(E,)`` start of the venue modes' intra-tick path (zeros, meaning none, for ``None``)."""
    if value is None:
        return np.zeros(n_envs)
    out = np.ascontiguousarray(
        np.broadcast_to(np.asarray(value, dtype=np.float64), (n_envs,)), dtype=np.float64
    )
    if not np.isfinite(out).all():
        raise ValueError(f"{name} must be finite, got {out}")
    return out


class _Collateral:
    """One tick's collateral-asset terms, checked: what the margin engine counts and sells.

    Attributes:
        price: ``(E, K)`` the price the venue uses, USD per unit.
        haircut: ``(E, K)`` the venue's discount, in [0, 1).
        redemption: ``(E, K)`` the redemption value (``None`` when not given).
        value_usd: ``(E, A)`` each account's assets at ``price x (1 - haircut)``: what
            counts toward its equity and what they fetch when seized.
    """

    __slots__ = ("haircut", "price", "redemption", "value_usd")

    def __init__(
        self,
        state: SimState,
        price: ArrayLike | None,
        haircut: ArrayLike | None,
        redemption: ArrayLike | None,
    ) -> None:
        n_envs, n_assets = state.n_envs, state.n_collateral
        if price is None:
            raise ValueError(
                f"collateral_price is required: the state holds {n_assets} collateral assets"
            )
        self.price = collateral_prices("collateral_price", price, n_envs, n_assets)
        self.haircut = _haircuts(haircut, n_envs, n_assets)
        self.redemption = (
            None
            if redemption is None
            else collateral_prices("collateral_redemption_price", redemption, n_envs, n_assets)
        )
        per_unit = self.price * (1.0 - self.haircut)
        self.value_usd = (state.collateral_units * per_unit[:, None, :]).sum(axis=2)


def _haircuts(haircut: ArrayLike | None, n_envs: int, n_assets: int) -> FloatArray:
    """``collateral_haircut`` (``(K,)``, ``(E, K)`` or scalar; default 0) as checked ``(E, K)``."""
    if haircut is None:
        return np.zeros((n_envs, n_assets))
    out = per_asset("collateral_haircut", haircut, n_envs, n_assets)
    ok = np.isfinite(out) & (out >= 0.0) & (out < 1.0)
    if not ok.all():
        raise ValueError(
            f"collateral_haircut must be finite and in [0, 1), got {out[~ok].flat[0]!r}"
        )
    return out


_FUND_MODES = ("shared", "segmented")


class _FundPots:
    """One tick's fund terms for the cross path, checked: which pot pays each market, caps.

    Attributes:
        segmented: Whether the segments of ``state.fund_segments_usd`` pay (else the shared
            fund, ``state.fund``, as one pot).
        group: ``(M,)`` int64, the pot of each market (zeros when shared).
        cap: ``(E, M)`` the most each market's legs are paid per tick (``inf``: no cap).
        transfer_cap: ``(E,)`` the most the segments may lend one another per tick (0: none;
            zeros when shared).
        needs_cross: Whether a one-market state must take the cross path (segments or a
            finite cap; the one-market kernels have neither).
    """

    __slots__ = ("cap", "group", "needs_cross", "segmented", "transfer_cap")

    def __init__(
        self,
        state: SimState,
        mode: str,
        groups: ArrayLike | None,
        cap_usd: ArrayLike | None,
        fund_available_usd: ArrayLike | None,
        transfer_cap_usd: ArrayLike | None = None,
    ) -> None:
        n_envs, n_mk, n_seg = state.n_envs, state.n_markets, state.n_fund_segments
        if mode not in _FUND_MODES:
            raise ValueError(f"fund_mode must be one of {_FUND_MODES}, got {mode!r}")
        self.segmented = mode == "segmented"
        if not self.segmented:
            if n_seg > 0:
                raise ValueError(
                    f"fund_mode 'shared' pays from state.fund, but the state holds {n_seg} "
                    "fund segments (state.fund_segments_usd): use fund_mode 'segmented'"
                )
            if groups is not None:
                raise ValueError("fund_groups maps markets to segments: fund_mode 'segmented' only")
            self.group = np.zeros(n_mk, dtype=np.int64)
        else:
            if fund_available_usd is not None:
                raise ValueError(
                    "fund_available_usd bounds the shared fund; a segmented fund pays its "
                    "segments' cash (leave it None)"
                )
            self.group = _fund_groups(groups, n_mk, n_seg)
        self.cap = _fund_caps(cap_usd, n_envs, n_mk)
        self.transfer_cap = np.zeros(n_envs)
        if transfer_cap_usd is not None:
            if not self.segmented:
                raise ValueError(
                    "fund_transfer_cap_usd caps transfers between segments: fund_mode "
                    "'segmented' only"
                )
            t = np.asarray(transfer_cap_usd, dtype=np.float64)
            if t.shape not in ((), (n_envs,)) or not (t >= 0.0).all():
                raise ValueError(
                    f"fund_transfer_cap_usd must be a number or (n_envs,) = ({n_envs},) of "
                    f"USD per tick >= 0 (inf: the segments pool), got {transfer_cap_usd!r}"
                )
            self.transfer_cap = kernel_array(t, (n_envs,))
        self.needs_cross = self.segmented or (
            cap_usd is not None and bool(np.isfinite(self.cap).any())
        )


def _fund_groups(groups: ArrayLike | None, n_markets: int, n_segments: int) -> IntArray:
    """``fund_groups`` as a checked ``(M,)`` int64 array of segments (default: one per market)."""
    if n_segments == 0:
        raise ValueError(
            "fund_mode 'segmented' needs fund segments: create the state with "
            "fund_segments_usd (n_envs, n_segments)"
        )
    if groups is None:
        if n_segments != n_markets:
            raise ValueError(
                f"fund_groups is required: the state has {n_segments} fund segments for "
                f"{n_markets} markets (the default is one segment per market)"
            )
        return np.arange(n_markets, dtype=np.int64)
    g = np.asarray(groups)
    if g.shape != (n_markets,):
        raise ValueError(f"fund_groups must be (n_markets,) = ({n_markets},), got shape {g.shape}")
    whole = np.issubdtype(g.dtype, np.integer) or (
        np.issubdtype(g.dtype, np.floating) and bool((g == np.round(g)).all())
    )
    if not whole or not ((g >= 0) & (g < n_segments)).all():
        raise ValueError(
            f"fund_groups entries must be segment indices 0 .. {n_segments - 1}, got {g.tolist()}"
        )
    return np.ascontiguousarray(g, dtype=np.int64)


def _fund_caps(cap_usd: ArrayLike | None, n_envs: int, n_markets: int) -> FloatArray:
    """``fund_cap_usd`` (``(M,)``, ``(E, M)`` or scalar; default ``inf``) as checked ``(E, M)``."""
    if cap_usd is None:
        return np.full((n_envs, n_markets), np.inf)
    c = np.asarray(cap_usd, dtype=np.float64)
    try:
        out = kernel_array(c, (n_envs, n_markets))
    except ValueError:
        raise ValueError(
            f"fund_cap_usd must be (n_markets,) or (n_envs, n_markets) = ({n_envs}, "
            f"{n_markets}), got shape {c.shape}"
        ) from None
    ok = out >= 0.0  # NaN fails; inf (no cap) passes
    if not ok.all():
        raise ValueError(
            f"fund_cap_usd must be >= 0 USD per tick (inf for no cap), got {out[~ok].flat[0]!r}"
        )
    return out


def _mmr_mults(mult: ArrayLike | None, n_envs: int, n_markets: int) -> FloatArray:
    """``market_mmr_mult`` (``(M,)`` or ``(E, M)``; default ones) as a checked ``(E, M)``.

    Always a fresh C-contiguous float64 array, so the kernels compile one layout for it.
    A scalar is refused: one multiple for every market is the exchange's ``mmr``, a
    ``RiskParams`` lever of its own.
    """
    if mult is None:
        return np.ones((n_envs, n_markets))
    m = np.asarray(mult, dtype=np.float64)
    if m.shape not in ((n_markets,), (n_envs, n_markets)):
        raise ValueError(
            f"market_mmr_mult must be (n_markets,) = ({n_markets},) or (n_envs, n_markets) = "
            f"({n_envs}, {n_markets}), got shape {m.shape}"
        )
    out = kernel_array(m, (n_envs, n_markets))
    ok = np.isfinite(out) & (out > 0.0)
    if not ok.all():
        raise ValueError(
            "market_mmr_mult must be finite and > 0 (a multiple of the exchange's "
            f"maintenance requirement, in (0, inf)), got {float(out[~ok].flat[0])!r}"
        )
    return out


def market_requirements(
    state: SimState,
    params: RiskParams,
    mark: ArrayLike,
    *,
    market_mmr_mult: ArrayLike | None = None,
) -> FloatArray:
    """Each position's maintenance requirement in USD, ``(E, A, M)``, per-market margin applied.

    Market ``j``'s position of exchange ``i`` requires the exchange's requirement of its
    notional ``|size| x mark`` (flat ``mmr`` or the tier table,
    :func:`~fundgym.envs.core.margin.maintenance_requirement`) times
    ``market_mmr_mult[i, j]``: the ``req_j`` the cross path's kernels compute, in the same
    operation order (so the same bits per position). Their sum over markets is
    :func:`margin_state`'s requirement (to rounding of the sum's order); feed them to
    :func:`~fundgym.envs.core.formulas.cross_leg_collateral` for the legs' bankruptcy prices.

    Args:
        state: Batch state (read only).
        params: Risk parameters (``mmr`` and ``tiers`` are read).
        mark: ``(E,)`` (one market) or ``(E, M)`` prices the margin engine reads.
        market_mmr_mult: ``(M,)`` or ``(E, M)`` multiple of each market's requirement,
            finite and > 0 (default ones): :func:`core_step`'s.
    """
    n_envs, n_mk = state.n_envs, state.n_markets
    marks = _marks(mark, n_envs, n_mk)
    mult = _mmr_mults(market_mmr_mult, n_envs, n_mk)
    mmr = params.per_env("mmr", n_envs)[:, None, None]
    notional_usd = np.abs(state.size) * marks[:, None, :]
    req = maintenance_requirement(notional_usd, mmr, params.tiers)
    return np.asarray(req * mult[:, None, :], dtype=np.float64)


def margin_state(
    state: SimState,
    params: RiskParams,
    mark: ArrayLike,
    *,
    collateral_price: ArrayLike | None = None,
    collateral_haircut: ArrayLike | None = None,
    market_mmr_mult: ArrayLike | None = None,
) -> tuple[FloatArray, FloatArray]:
    """Cross-margin equity and maintenance requirement of every account, each ``(E, A)``.

    The requirement is the one :func:`core_step`'s trigger reads: the sum over markets of
    each position's requirement times its market's ``market_mmr_mult``.

    Args:
        state: Batch state (read only).
        params: Risk parameters (``mmr`` and ``tiers`` are read).
        mark: ``(E,)`` (one market) or ``(E, M)`` prices the margin engine reads.
        collateral_price: ``(E, K)`` or ``(K,)`` price of the collateral assets, > 0;
            required when the state has any (:func:`core_step`'s).
        collateral_haircut: ``(K,)`` or ``(E, K)`` haircut in [0, 1) (default 0).
        market_mmr_mult: ``(M,)`` or ``(E, M)`` multiple of each market's requirement,
            finite and > 0 (default ones): :func:`core_step`'s.
    """
    n_envs, n_acc = state.n_envs, state.n_accounts
    marks = _marks(mark, n_envs, state.n_markets)
    mult = _mmr_mults(market_mmr_mult, n_envs, state.n_markets)
    floors, rates, cums, base = _tier_table(params)
    eq = np.empty((n_envs, n_acc))
    req = np.empty((n_envs, n_acc))
    coll = state.collateral_usd
    if state.n_collateral > 0:
        coll = coll + _Collateral(state, collateral_price, collateral_haircut, None).value_usd
    kernels.margin_kernel(
        coll,
        state.size,
        state.entry_price,
        marks,
        mult,
        params.packed(n_envs),
        floors,
        rates,
        cums,
        base,
        eq,
        req,
    )
    return eq, req


def core_step(
    state: SimState,
    params: RiskParams,
    mark: ArrayLike,
    impact: ImpactModel | Sequence[ImpactModel],
    book_price: ArrayLike | None = None,
    fund_available_usd: ArrayLike | None = None,
    *,
    fund_stressed: ArrayLike = False,
    allocation: AllocationParams | None = None,
    tick_minutes: float = 1.0,
    prev_mark: ArrayLike | None = None,
    prev_book_price: ArrayLike | None = None,
    collateral_price: ArrayLike | None = None,
    collateral_haircut: ArrayLike | None = None,
    collateral_redemption_price: ArrayLike | None = None,
    fund_mode: str = "shared",
    fund_groups: ArrayLike | None = None,
    fund_cap_usd: ArrayLike | None = None,
    market_mmr_mult: ArrayLike | None = None,
    fund_transfer_cap_usd: ArrayLike | None = None,
) -> StepEvents:
    """Mark to market, check margins and liquidate, for every exchange in the batch.

    Args:
        state: Batch state, updated in place (accounts, counterparty, liquidator rewards,
            unrecovered loss, and the fund's portfolio through
            :func:`~fundgym.envs.fund.portfolio.settle`).
        params: Risk parameters (scalars or ``(E,)`` arrays).
        mark: ``(E, M)`` price the margin engine reads (the oracle or mark price); ``(E,)``
            for one market.
        impact: Depth model that prices the tick's liquidation flow, or one per market
            (a sequence of ``M``; :func:`fundgym.envs.core.impact.market_books` broadcasts
            one square-root book by each market's depth scale). One model for several
            markets gives every market that book; each market's flow is priced on its own.
        book_price: ``(E, M)`` (one market: ``(E,)``) price of the venue's book that
            liquidation orders walk (default ``mark``); differs from ``mark`` when the oracle
            is stale, floored or manipulated.
        fund_available_usd: ``(E,)`` what the fund can pay this tick, >= 0 (default: its
            liquid value, :meth:`~fundgym.envs.fund.portfolio.FundPortfolio.liquid_usd`, at its last
            mark; all of it for a fund held in cash).
        fund_stressed: ``(E,)`` bool, whether the lending market is stressed (caps how much
            of the fund's ``yield`` bucket can be withdrawn).
        allocation: The fund's bucket terms (defaults when ``None``).
        tick_minutes: Length of the tick; the venue liquidation modes run their sub-steps
            (a dYdX block, a Hyperliquid check: one second each) inside it.
        prev_mark: ``(E,)`` the previous tick's ``mark``: the sub-stepped venue modes
            (``dydx_v4``, ``hyperliquid``) read the oracle on a path from it to ``mark``,
            linear in log price (:func:`fundgym.envs.core.liquidation.path_price`), so their
            engine meets each account as the price crosses its maintenance level. ``None``, or
            an entry that is not > 0: no previous tick, every sub-step reads ``mark``.
        prev_book_price: ``(E,)`` the previous tick's ``book_price``, where the path of the
            book the sub-steps' fills walk starts (``None`` or not > 0: none).
        collateral_price: ``(E, K)`` or ``(K,)`` price, > 0, at which the margin engine
            counts and sells the state's ``K`` collateral assets; required when ``K > 0``
            (ignored when ``K = 0``). Which price (the venue's book, an external index, the
            redemption value) is the caller's choice: ``docs/markets.md`` tables each one's
            failure mode.
        collateral_haircut: ``(K,)`` or ``(E, K)`` the assets' haircut in [0, 1) (default
            0): equity counts ``units x price x (1 - haircut)``, and a seized asset sells at
            that price.
        collateral_redemption_price: ``(E, K)`` or ``(K,)`` the assets' redemption value,
            > 0, read only for ``StepEvents.collateral_depeg_loss_usd`` (zero without it).
        fund_mode: ``"shared"`` (one fund, ``state.fund``, pays every market) or
            ``"segmented"`` (each market's legs are paid by, and pay fees to, their group's
            segment of ``state.fund_segments_usd``; ``state.fund`` is not touched).
        fund_groups: ``(M,)`` the segment (``0 .. G - 1``) of each market, segmented mode
            only (default: one segment per market, which needs ``G = M``).
        fund_cap_usd: ``(M,)`` or ``(E, M)`` the most the fund pays toward each market's
            shortfalls per tick, >= 0 (``inf``, the default, for no cap).
        fund_transfer_cap_usd: Segmented only: the most the segments may lend one another
            per tick, a number or ``(E,)``, >= 0 (default ``None``: transfers forbidden;
            ``inf`` pools the segments for shortfalls). A leg its own segment cannot cover
            draws from the other segments in segment order (``kernels.lend_between_pots``);
            ``StepEvents.fund_transfer_usd`` reports what each segment sent, net.
        market_mmr_mult: ``(M,)`` or ``(E, M)`` multiple of each market's maintenance
            requirement, finite and > 0 (default ``None``: ones, today's step bit for bit).
            Market ``j``'s position requires the exchange's requirement (flat ``mmr`` or
            tiers) times ``market_mmr_mult[i, j]``, in the trigger and in the legs'
            apportioned collateral. A multiple other than one runs the cross path, one
            market included (and so is refused with a venue liquidation mode).

    Returns:
        The tick's events per exchange. The fund's fee income and the shortfall it paid are
        booked into ``state.fund`` (income received first, then the payment); any cost of
        raising the payment from non-cash buckets is booked to ``state.net_deposits_usd``
        with the fund's other outside gains and losses. Should the fund pay less than
        ``fund_available_usd`` promised, the difference is reported and booked as
        unrecovered. Segmented: each segment gains its markets' fee income and pays their
        legs; a rounding that would take a segment below zero is booked as unrecovered.
        ``StepEvents.market_fund_paid_usd`` reports what each market's legs were paid, and
        ``market_adl_volume_usd``, ``market_adl_haircut_usd``, ``market_socialized_usd`` and
        ``market_unrecovered_usd`` each market's part of the ADL, socialisation and
        unrecovered columns (the unrecovered booked for the fund's or a segment's gap is no
        market's, and is left out of those rows).

    Raises:
        NotImplementedError: More than one market, or collateral assets, with what is built
            for one market of USD collateral only: an active backstop vault under
            ``partial``, ``dydx_v4`` with a transfer cap between fund segments, ADL before
            the fund under a venue mode.
        ValueError: ``impact`` lists a number of models other than ``M``, or ``mark`` /
            ``book_price`` is not ``(E, M)`` with several markets;
            ``fund_available_usd`` is negative or not finite, ``tick_minutes`` is not
            positive, or ``prev_mark`` / ``prev_book_price`` is not finite; a collateral
            price is missing, not finite or not > 0, or a haircut is not in [0, 1);
            ``fund_mode`` is neither mode, the shared mode meets a state holding segments
            (or the segmented one a state with none, or ``fund_available_usd``), a
            ``fund_groups`` entry is not a segment, or a ``fund_cap_usd`` is NaN or < 0;
            ``market_mmr_mult`` is not ``(M,)`` or ``(E, M)``, or an entry is not finite
            and > 0.
        TypeError: A venue liquidation mode with an impact model that is not a
            :class:`~fundgym.envs.core.impact.SqrtImpact` (its sub-steps price the
            square-root book inside the kernel).
    """
    n_envs = state.n_envs
    if not tick_minutes > 0.0:
        raise ValueError(f"tick_minutes must be > 0, got {tick_minutes!r}")
    collateral = None
    if state.n_collateral > 0:
        collateral = _Collateral(
            state, collateral_price, collateral_haircut, collateral_redemption_price
        )
    pots = None  # the default terms (one shared fund, no cap) cost the one-market path nothing
    if (
        fund_mode != "shared"
        or fund_groups is not None
        or fund_cap_usd is not None
        or fund_transfer_cap_usd is not None
        or state.n_fund_segments > 0
    ):
        pots = _FundPots(
            state, fund_mode, fund_groups, fund_cap_usd, fund_available_usd, fund_transfer_cap_usd
        )
    mmr_mult = None  # checked here; the one-market kernels never read it
    if market_mmr_mult is not None:
        mmr_mult = _mmr_mults(market_mmr_mult, n_envs, state.n_markets)
    if (
        state.n_markets != 1
        or collateral is not None
        or (pots is not None and pots.needs_cross)
        or (mmr_mult is not None and bool((mmr_mult != 1.0).any()))
    ):
        return _cross_step(
            state,
            params,
            mark,
            impact,
            book_price,
            fund_available_usd,
            fund_stressed=fund_stressed,
            allocation=allocation,
            collateral=collateral,
            pots=pots,
            mmr_mult=mmr_mult,
            tick_minutes=tick_minutes,
            prev_mark=prev_mark,
            prev_book_price=prev_book_price,
        )
    if type(impact) in (tuple, list):  # one market: a list of one book is that book
        impact = _market_impacts(impact, 1)[0]
    impact = cast("ImpactModel", impact)
    mode = params.liquidation_mode_code
    if mode != LIQ_PARTIAL and not isinstance(impact, SqrtImpact):
        raise TypeError(
            f"liquidation_mode {params.liquidation_mode!r} prices its sub-steps through a "
            f"SqrtImpact book; got {type(impact).__name__}"
        )
    marks = _marks(mark, n_envs, 1)
    book = marks[:, 0] if book_price is None else _marks(book_price, n_envs, 1)[:, 0]
    floors, rates, cums, base = _tier_table(params)
    packed = params.packed(n_envs)
    ev = StepEvents.zeros(n_envs)
    coll, size, entry = state.collateral_usd, state.size, state.entry_price
    total, liq_idx = kernels.scan_kernel(
        coll, size, entry, marks, book, packed, floors, rates, cums, base, ev.data
    )
    vault = state.vault
    with_vault = bool((vault[:, V_ACTIVE] > 0.0).any())  # unwinds even if no longer a stage
    if total == 0 and not with_vault:  # the common case: no account is liquidatable this tick
        return ev
    if (with_vault or _liquidators(packed)) and not isinstance(impact, SqrtImpact):
        raise TypeError(
            "the backstop vault and outside liquidators price through a SqrtImpact book; "
            f"got {type(impact).__name__}"
        )

    fund_px, alloc, available = _fund_terms(
        state, marks, fund_available_usd, fund_stressed, allocation
    )
    oracle_from = _path_start("prev_mark", prev_mark, n_envs)
    book_from = _path_start("prev_book_price", prev_book_price, n_envs)
    depth = _depth(impact, n_envs)
    max_impact = float(impact.max_impact_frac) if isinstance(impact, SqrtImpact) else 0.0
    book = np.ascontiguousarray(book, dtype=np.float64)
    if total > 0:
        sell_px, buy_px = impact.fill_prices(book, ev.liquidation_sell_usd, ev.liquidation_buy_usd)
        kernels.waterfall_kernel(
            coll,
            size,
            entry,
            marks,
            packed,
            floors,
            rates,
            cums,
            base,
            np.ascontiguousarray(sell_px, dtype=np.float64),
            np.ascontiguousarray(buy_px, dtype=np.float64),
            np.ascontiguousarray(available, dtype=np.float64),
            params.waterfall_code,
            params.socialization_code,
            params.adl_policy_code,
            mode,
            book,
            depth,
            max_impact,
            tick_minutes * 60.0,
            oracle_from,
            book_from,
            state.counterparty_size,
            state.counterparty_cash_usd,
            state.liquidator_rewards_usd,
            state.unrecovered_usd,
            vault,
            ev.data,
            liq_idx,
        )
    if with_vault:  # the vault works its inventory after the tick's liquidations
        kernels.vault_kernel(
            vault,
            state.counterparty_size,
            state.counterparty_cash_usd,
            marks,
            book,
            depth,
            max_impact,
            packed,
            ev.data,
            coll,
            size,
            entry,
            params.waterfall_code,
            params.adl_policy_code,
        )

    _book_fund(state, ev, fund_px, fund_stressed, alloc)
    return ev


def _fund_available(fund_available_usd: ArrayLike, n_envs: int) -> FloatArray:
    """``fund_available_usd`` as a checked ``(E,)`` array."""
    available = np.array(
        np.broadcast_to(np.asarray(fund_available_usd, dtype=np.float64), (n_envs,))
    )
    if not np.isfinite(available).all() or (available < 0.0).any():
        raise ValueError(f"fund_available_usd must be finite and >= 0, got {available}")
    return available


def _fund_terms(
    state: SimState,
    marks: FloatArray,
    fund_available_usd: ArrayLike | None,
    fund_stressed: ArrayLike,
    allocation: AllocationParams | None,
) -> tuple[FloatArray, AllocationParams, FloatArray]:
    """The fund's price, bucket terms and what it can pay this tick: ``(px, alloc, available)``.

    The fund is valued and paid at its last mark (the simulator marks it before the core); a
    fund never marked is valued at the exchange's own price, the first (factor) market's (a
    fund of several assets, which the multi-market simulator marks every tick before the
    core, at 1 per unit: never marked, it holds only stable and yield).
    """
    pf = state.fund
    fallback = marks[:, 0] if pf.n_assets is None else 1.0
    fund_px = np.where(pf.mark_price > 0.0, pf.mark_price, fallback)
    alloc = _DEFAULT_ALLOCATION if allocation is None else allocation
    if fund_available_usd is None:
        if not (pf.yield_usd.any() or pf.volatile_units.any() or pf.put_units.any()):
            available = pf.stable_usd.copy()  # a cash fund: its liquid value is its cash
        else:
            available = pf.liquid_usd(fund_px, pf.mark_vol_annual, fund_stressed, alloc)
    else:
        available = _fund_available(fund_available_usd, state.n_envs)
    return fund_px, alloc, available


def _book_fund(
    state: SimState,
    ev: StepEvents,
    fund_px: FloatArray,
    fund_stressed: ArrayLike,
    alloc: AllocationParams,
) -> None:
    """Book the tick's fee income and paid shortfall into the fund (income first)."""
    pf = state.fund
    income = ev.fund_fee_income_usd
    owed = ev.shortfall_usd
    if (income > 0.0).any() or (owed > 0.0).any():
        ext_before = pf.external_pnl_usd.copy()
        paid = settle(pf, income, owed, fund_px, pf.mark_vol_annual, fund_stressed, alloc)
        state.net_deposits_usd += pf.external_pnl_usd - ext_before
        gap = owed - paid  # > 0 only if the fund could not pay what it was said to hold
        if (gap != 0.0).any():
            ev.shortfall_usd = paid
            ev.unrecovered_usd += gap
            state.unrecovered_usd += gap


def _market_impacts(
    impact: ImpactModel | Sequence[ImpactModel], n_markets: int
) -> tuple[ImpactModel, ...]:
    """One impact model per market: ``impact`` itself for every market, or its ``M`` entries."""
    if isinstance(impact, Sequence):
        if len(impact) != n_markets:
            raise ValueError(
                f"impact must be one model or one per market ({n_markets}), "
                f"got {len(impact)} models"
            )
        return tuple(impact)
    return (impact,) * n_markets


def _cross_step(
    state: SimState,
    params: RiskParams,
    mark: ArrayLike,
    impact: ImpactModel | Sequence[ImpactModel],
    book_price: ArrayLike | None,
    fund_available_usd: ArrayLike | None,
    *,
    fund_stressed: ArrayLike,
    allocation: AllocationParams | None,
    collateral: _Collateral | None,
    pots: _FundPots | None,
    mmr_mult: FloatArray | None,
    tick_minutes: float = 1.0,
    prev_mark: ArrayLike | None = None,
    prev_book_price: ArrayLike | None = None,
) -> StepEvents:
    """:func:`core_step` over several markets: cross-margined accounts, ``partial`` or a venue mode.

    The rules are the module docstring's, per leg (an account's position in one market):
    each liquidatable account sends an order in every market where it holds a position, each
    market's orders are priced together through that market's book, each leg's bankruptcy
    price apportions the account's equity by the leg's share of its requirement, the fund
    pays the legs' shortfalls in account then market order, ADL and socialisation run per
    market. ``docs/markets.md`` ("The margin engine across markets") tabulates them.

    With ``collateral`` (a state with collateral assets, any ``M``): the scan and the
    waterfall read each account's USD collateral plus its assets' haircut value; the
    liquidated accounts' assets are seized first (:func:`_seize_collateral`), and what the
    waterfall did to the others' balances is booked back to their USD collateral.

    ``pots`` says which fund pays each market's legs and each market's cap: the shared
    fund as one pot (booked by :func:`_book_fund`), or the segments (:func:`_book_segments`);
    ``None`` is the shared fund without caps.

    ``mmr_mult`` (checked ``(E, M)``, ``None`` for ones) scales each market's maintenance
    requirement in the scan's trigger and the waterfall's apportioned leg collateral.

    ``hyperliquid``, ``binance`` and ``bitmex`` run their sub-steps, orders and takeovers
    per leg (:mod:`fundgym.envs.core.venue_cross`), reading each market's oracle and book on a
    path from ``prev_mark`` / ``prev_book_price`` (``(E, M)``; ``None``: no previous tick);
    an active backstop vault (``hyperliquid``'s HLP) takes accounts over with every leg and
    unwinds its inventory market by market after the tick's liquidations. A vault closed
    below zero passes its loss to the shared fund as a shortfall, or, segmented (no pot is
    the vault's), to the exchange as unrecovered.

    When someone is liquidated, the waterfall's per-market splits (fund paid, ADL volume and
    haircut, socialised, unrecovered) are set on the events as the kernel wrote them; the
    unrecovered that :func:`_book_fund` / :func:`_book_segments` add afterwards, per fund,
    stays out of ``market_unrecovered_usd``.
    """
    n_envs, n_mk = state.n_envs, state.n_markets
    if collateral is not None:
        what = "collateral assets"
    elif n_mk > 1:
        what = f"{n_mk} markets"
    else:  # one market sent here by its per-market terms
        what = "per-market terms (market_mmr_mult, fund segments or caps)"
    mode = params.liquidation_mode_code
    venue = mode != LIQ_PARTIAL
    if venue and mode not in CROSS_VENUE_MODES:
        raise NotImplementedError(
            f"liquidation_mode {params.liquidation_mode!r} runs one market of USD "
            f"collateral; with {what} 'partial', 'hyperliquid', 'binance', 'bitmex' and "
            "'dydx_v4' are built"
        )
    if mode == LIQ_DYDX_V4 and pots is not None and (pots.transfer_cap > 0.0).any():
        raise NotImplementedError(
            "fund_transfer_cap_usd > 0 with liquidation_mode 'dydx_v4': dYdX pays a fill "
            "whole from its market's fund or rejects it; lending between segments is not "
            "built for it"
        )
    with_vault = bool((state.vault[:, V_ACTIVE] > 0.0).any())
    if with_vault and not venue:
        raise NotImplementedError(
            f"an active backstop vault takes accounts over in a venue liquidation mode; with "
            f"{what} the 'partial' mode has no takeover (use 'hyperliquid')"
        )
    if venue and params.waterfall_code & W_ADL_FIRST:
        raise NotImplementedError(
            f"stages {params.stages!r}: ADL before the fund is not built for the venue modes "
            f"with {what}"
        )
    impacts = _market_impacts(impact, n_mk)
    if venue and not all(isinstance(model, SqrtImpact) for model in impacts):
        raise TypeError(
            f"liquidation_mode {params.liquidation_mode!r} prices its sub-steps through a "
            "SqrtImpact book in every market"
        )
    liquidators = _liquidators(params.packed(n_envs))
    if liquidators and not all(isinstance(model, SqrtImpact) for model in impacts):
        raise TypeError(
            "outside liquidators price their hedge through a SqrtImpact book in every market"
        )
    shapes = ((n_envs, n_mk), (1, n_mk)) + (((n_envs,), ()) if n_mk == 1 else ())
    for name, value in (("mark", mark), ("book_price", book_price)):
        if value is not None and np.shape(value) not in shapes:
            raise ValueError(
                f"{name} must be (n_envs, n_markets) = ({n_envs}, {n_mk}) with several "
                f"markets, got shape {np.shape(value)}"
            )
    marks = _marks(mark, n_envs, n_mk)
    book = marks if book_price is None else marks_2d(book_price, n_envs, n_mk)
    floors, rates, cums, base = _tier_table(params)
    packed = params.packed(n_envs)
    if mmr_mult is None:
        mmr_mult = np.ones((n_envs, n_mk))
    flow = np.zeros((n_envs, n_mk, 2))
    ev = StepEvents(np.zeros((n_envs, N_EVENTS)), flow)
    coll, size, entry = state.collateral_usd, state.size, state.entry_price
    if collateral is not None:  # the kernels read USD plus the assets' haircut value
        coll = coll + collateral.value_usd
        ev.collateral_seized_usd = np.zeros(n_envs)
        ev.collateral_depeg_loss_usd = np.zeros(n_envs)
    total, liq_idx = kernels.scan_cross_kernel(
        coll, size, entry, marks, mmr_mult, book, packed, floors, rates, cums, base, ev.data, flow
    )
    if total == 0 and not with_vault:
        return ev
    if pots is None:
        pots = _FundPots(state, "shared", None, None, None)
    if pots.segmented:
        pot_available = state.fund_segments_usd.copy()
    else:
        fund_px, alloc, available = _fund_terms(
            state, marks, fund_available_usd, fund_stressed, allocation
        )
        pot_available = np.ascontiguousarray(available, dtype=np.float64)[:, None]
    market_paid = np.zeros((n_envs, n_mk))
    market_income = np.zeros((n_envs, n_mk))
    market_adl_volume = np.zeros((n_envs, n_mk))
    market_adl_haircut = np.zeros((n_envs, n_mk))
    market_socialized = np.zeros((n_envs, n_mk))
    market_unrecovered = np.zeros((n_envs, n_mk))
    pot_lent = np.zeros((n_envs, pot_available.shape[1]))
    if collateral is not None and total > 0:
        _seize_collateral(state, collateral, ev, coll, liq_idx)
    before = coll.copy() if collateral is not None else coll
    depths = np.ascontiguousarray(np.stack([_depth(m, n_envs) for m in impacts], axis=1))
    caps = np.array([_max_impact(m) for m in impacts])
    if venue:  # the venue kernel prices each sub-step's flow on each market's book itself
        if total > 0:
            venue_cross.venue_cross_kernel(
                coll, size, entry, marks, mmr_mult, packed, floors, rates, cums, base,
                np.ascontiguousarray(book), depths, caps, tick_minutes * 60.0,
                _path_starts("prev_mark", prev_mark, n_envs, n_mk),
                _path_starts("prev_book_price", prev_book_price, n_envs, n_mk), pot_available,
                pots.group, pots.cap, params.waterfall_code, params.socialization_code,
                params.adl_policy_code, params.liquidation_mode_code, state.counterparty_size,
                state.counterparty_cash_usd, state.liquidator_rewards_usd, state.unrecovered_usd,
                state.vault, ev.data, flow, market_paid, market_income, market_adl_volume,
                market_adl_haircut, market_socialized, market_unrecovered, liq_idx,
                pots.transfer_cap, pot_lent,
            )  # fmt: skip
        if with_vault:  # the vault works its inventory after the tick's liquidations
            venue_cross.vault_cross_kernel(
                state.vault, state.counterparty_size, state.counterparty_cash_usd, marks, book,
                depths, caps, packed, not pots.segmented, ev.data, flow, state.unrecovered_usd,
                coll, size, entry, params.waterfall_code, params.adl_policy_code,
                market_adl_volume,
            )  # fmt: skip
    else:  # one pass: each market's orders fill together at its book's price for their flow
        sell_px = np.empty((n_envs, n_mk))
        buy_px = np.empty((n_envs, n_mk))
        for j, model in enumerate(impacts):
            col = np.ascontiguousarray(book[:, j])
            sell_px[:, j], buy_px[:, j] = model.fill_prices(
                col, np.ascontiguousarray(flow[:, j, 0]), np.ascontiguousarray(flow[:, j, 1])
            )
        kernels.waterfall_cross_kernel(
            coll,
            size,
            entry,
            marks,
            mmr_mult,
            packed,
            floors,
            rates,
            cums,
            base,
            sell_px,
            buy_px,
            pot_available,
            pots.group,
            pots.cap,
            params.waterfall_code,
            params.socialization_code,
            params.adl_policy_code,
            book,
            depths,
            caps,
            state.counterparty_size,
            state.counterparty_cash_usd,
            state.liquidator_rewards_usd,
            state.unrecovered_usd,
            ev.data,
            flow,
            market_paid,
            market_income,
            market_adl_volume,
            market_adl_haircut,
            market_socialized,
            market_unrecovered,
            liq_idx,
            pots.transfer_cap,
            pot_lent,
        )
    if collateral is not None:
        _book_back(state, collateral, coll, before)
    ev.market_fund_paid_usd = market_paid
    ev.market_adl_volume_usd = market_adl_volume
    ev.market_adl_haircut_usd = market_adl_haircut
    ev.market_socialized_usd = market_socialized
    ev.market_unrecovered_usd = market_unrecovered  # the waterfall's; the booking's gap is not
    if pots.segmented:
        if (pots.transfer_cap > 0.0).any():
            ev.fund_transfer_usd = pot_lent
        _book_segments(state, ev, pots.group, market_paid, market_income, pot_lent)
    else:
        _book_fund(state, ev, fund_px, fund_stressed, alloc)
    return ev


def _path_starts(name: str, value: ArrayLike | None, n_envs: int, n_mk: int) -> FloatArray:
    """``(E, M)`` start of each market's intra-tick path (zeros, meaning none, for ``None``)."""
    if value is None:
        return np.zeros((n_envs, n_mk))
    out = np.ascontiguousarray(
        np.broadcast_to(np.asarray(value, dtype=np.float64), (n_envs, n_mk)), dtype=np.float64
    )
    if not np.isfinite(out).all():
        raise ValueError(f"{name} must be finite, got {value!r}")
    return out


def _book_segments(
    state: SimState,
    ev: StepEvents,
    group: IntArray,
    market_paid: FloatArray,
    market_income: FloatArray,
    pot_lent: FloatArray,
) -> None:
    """Book each market's fee income and paid shortfall into its group's segment.

    ``pot_lent`` ``(E, G)`` is what each segment lent the others' legs, net of what it
    borrowed (:func:`~fundgym.envs.core.kernels.lend_between_pots`): out of the lender, into
    the borrower, whose market's payments then leave it as its own.

    A segment paid at most its cash plus its income (the kernel's pot), so only rounding can
    take it below zero; that sliver is not paid by the segment but booked as unrecovered,
    as :func:`_book_fund` books what the shared fund could not pay.
    """
    seg = state.fund_segments_usd
    for j in range(group.shape[0]):
        seg[:, group[j]] += market_income[:, j] - market_paid[:, j]
    if pot_lent.any():
        seg -= pot_lent
    gap = np.maximum(-seg, 0.0).sum(axis=1)
    if (gap > 0.0).any():
        np.maximum(seg, 0.0, out=seg)
        ev.shortfall_usd -= gap
        ev.unrecovered_usd += gap
        state.unrecovered_usd += gap


def _seize_collateral(
    state: SimState,
    collateral: _Collateral,
    ev: StepEvents,
    coll: FloatArray,
    liq_idx: np.ndarray[Any, np.dtype[np.int64]],
) -> None:
    """Sell every liquidated account's collateral assets into its USD collateral.

    Each seized unit leaves the account at the venue's price and fetches ``price x (1 -
    haircut)``, credited to the account's USD collateral (which then equals ``coll``, the
    balance the scan read: the waterfall's bankruptcy accounting sees the proceeds); the
    haircut's value ``units x price x haircut`` goes to the outside counterparty's cash,
    the buyer that takes the assets at a discount. ``ev`` gains the seized value at the
    venue's price and, with a redemption price, the depeg loss.
    """
    units = state.collateral_units
    seized = ev.collateral_seized_usd
    depeg = ev.collateral_depeg_loss_usd
    assert seized is not None and depeg is not None  # set by _cross_step with collateral
    for i in range(state.n_envs):
        rows = liq_idx[i, : int(ev.data[i, EV_N_LIQUIDATIONS])]
        held = units[i, rows]  # (n, K)
        if not held.any():
            continue
        venue_usd = held * collateral.price[i]
        fetched_usd = held * (collateral.price[i] * (1.0 - collateral.haircut[i]))
        state.collateral_usd[i, rows] = coll[i, rows]  # usd + fetched, as the scan read it
        state.counterparty_cash_usd[i] += float((venue_usd - fetched_usd).sum())
        seized[i] = float(venue_usd.sum())
        if collateral.redemption is not None:
            depeg[i] = float((held * collateral.redemption[i]).sum() - fetched_usd.sum())
        units[i, rows] = 0.0
        collateral.value_usd[i, rows] = 0.0


def _book_back(
    state: SimState, collateral: _Collateral, coll: FloatArray, before: FloatArray
) -> None:
    """Book what the waterfall did to ``coll`` (USD plus assets) into USD collateral.

    An account without assets (the seized ones included) gets the waterfall's balance
    itself; one still holding assets gets the waterfall's change to its balance (an ADL
    counterparty's close, a socialised charge) added to its USD collateral, so an account
    the waterfall did not touch keeps its balance bit for bit.
    """
    usd = state.collateral_usd
    changed = coll != before
    holds = collateral.value_usd != 0.0
    usd[...] = np.where(holds, np.where(changed, usd + (coll - before), usd), coll)


def _liquidators(packed: FloatArray) -> bool:
    """Whether any exchange's liquidators earn a share of the fee (and so have capacity)."""
    return any(
        liquidators_paid(row[P_LIQ_FEE], row[P_LIQ_FUND_SHARE], row[P_LIQUIDATOR_MULT])
        for row in packed
    )

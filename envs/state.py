"""The simulation state: one record, structure of arrays, batch first, with a market axis.

Every dollar the simulator moves sits in exactly one field of :class:`SimState`, and
:func:`ledger_total` adds them up per exchange. Shapes, with ``E`` exchanges, ``A`` account
slots and ``M`` markets:

=========================  =============  ====================================================
field                      shape          what it holds
=========================  =============  ====================================================
``collateral_usd``         ``(E, A)``     each account's USD balance, realised PnL included.
                                          One balance per account, shared by its positions
                                          in every market (cross margin).
``size``                   ``(E, A, M)``  signed position in base units (+ long, - short).
``entry_price``            ``(E, A, M)``  average entry price, USD per base unit.
``counterparty_size``      ``(E, M)``     base units held by the outside counterparty (the
                                          book's market makers and takers outside the
                                          modelled population).
``counterparty_cash_usd``  ``(E,)``       its cash; its PnL is ``cash + sum(size x mark)``.
``fund``                   record         the insurance fund's portfolio (stored once: its
                                          buckets *are* the fund).
``vault``                  ``(E, 7)``     the backstop vault (``V_*`` columns of
                                          :mod:`fundgym.envs.core.vault`): its cash and its
                                          inventory, worth ``cash + size x mark``, its
                                          starting capital, whether it is active, its peak
                                          equity, largest drawdown and largest inventory;
                                          zeros without one.
``fee_revenue_usd``        ``(E,)``       the exchange's trading-fee revenue (the part not
                                          routed to the fund).
``liquidator_rewards_usd`` ``(E,)``       liquidation fees paid to outside liquidators.
``unrecovered_usd``        ``(E,)``       bad debt nobody could be made to pay; the exchange's
                                          own capital absorbs it.
``net_deposits_usd``       ``(E,)``       external deposits minus withdrawals, plus the fund's
                                          gains from outside (yield, option marks, costs).
``initial_total_usd``      ``(E,)``       ledger total at creation.
``collateral_units``       ``(E, A, K)``  units of ``K`` collateral assets each account posts
                                          besides USD (a USDe-like stable, a wBETH-like
                                          LST); ``K = 0`` (a zero-size axis) by default.
``fund_segments_usd``      ``(E, G)``     the cash of ``G`` segmented insurance funds, one
                                          per market group (``fund_mode="segmented"`` of
                                          :func:`fundgym.envs.core.step.core_step`);
                                          ``G = 0`` (a zero-size axis) by default.
=========================  =============  ====================================================

**Shared or segmented fund.** A dollar of insurance sits in exactly one place: ``fund`` is the
shared fund (one portfolio that pays every market's shortfalls), ``fund_segments_usd`` the
segments (each pays only its own markets' shortfalls and earns only their fees; no transfer
between segments or to the shared fund exists). An exchange is run in one mode: the shared
mode refuses a state holding segments, and the segmented mode never reads or writes ``fund``
(create the state with ``fund_usd=0`` and the segments' cash). Segments are cash: their
value is their balance, at any mark.

Collateral assets have no price of their own in the state: the margin engine reads the one its
caller passes (the venue's book, an external index or the redemption value; ``docs/markets.md``,
"Collateral assets in the margin engine"), and :func:`ledger_total` counts them at the price
it is given, ``units x price`` (no haircut: the haircut is a margin discount, not a loss).
A move of that price between two ledger readings is a revaluation of an outside asset, not
money the engine moved: the ledger closes when read at the price it was built (or the step
run) at.

The compiled kernels (:mod:`fundgym.envs.core.kernels`, :mod:`fundgym.envs.traders.kernels`) take
these arrays directly; nothing outside them keeps a second copy of any balance. Each exchange's sums
run over its own accounts only, so an exchange's numbers never depend on its siblings in a batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from fundgym.envs.core.vault import V_CASH, V_SIZE, inventory_column, vault_width
from fundgym.envs.fund.portfolio import FundPortfolio
from fundgym.envs.jit import kernel_array

FloatArray = np.ndarray[Any, np.dtype[np.float64]]


@dataclass
class SimState:
    """Mutable state of a batch of exchanges (see the module docstring for every field)."""

    collateral_usd: FloatArray
    size: FloatArray
    entry_price: FloatArray
    counterparty_size: FloatArray
    counterparty_cash_usd: FloatArray
    fund: FundPortfolio
    vault: FloatArray
    fee_revenue_usd: FloatArray
    liquidator_rewards_usd: FloatArray
    unrecovered_usd: FloatArray
    net_deposits_usd: FloatArray
    initial_total_usd: FloatArray
    collateral_units: FloatArray
    fund_segments_usd: FloatArray

    @property
    def n_envs(self) -> int:
        """Number of exchanges in the batch."""
        return int(self.size.shape[0])

    @property
    def n_accounts(self) -> int:
        """Account slots per exchange (empty slots hold zero size and collateral)."""
        return int(self.size.shape[1])

    @property
    def n_markets(self) -> int:
        """Markets listed by every exchange of the batch."""
        return int(self.size.shape[2])

    @property
    def n_collateral(self) -> int:
        """Collateral assets (besides USD) an account can post; 0 for USD only."""
        return int(self.collateral_units.shape[2])

    @property
    def n_fund_segments(self) -> int:
        """Segmented insurance funds (market groups); 0 when the fund is shared."""
        return int(self.fund_segments_usd.shape[1])

    @property
    def fund_usd(self) -> FloatArray:
        """The fund's value at its last mark, ``(E,)`` (read-only: the buckets hold it)."""
        pf = self.fund
        out: FloatArray = pf.value_usd(pf.mark_price, pf.mark_vol_annual)
        return out

    @classmethod
    def create(
        cls,
        collateral_usd: ArrayLike,
        size: ArrayLike,
        entry_price: ArrayLike,
        fund_usd: ArrayLike,
        collateral_units: ArrayLike | None = None,
        collateral_price: ArrayLike | None = None,
        fund_segments_usd: ArrayLike | None = None,
    ) -> SimState:
        """Build a state whose open positions were opened against the counterparty at entry.

        Args:
            collateral_usd: ``(E, A)``, or ``(A,)`` for one exchange.
            size: ``(E, A, M)``; ``(E, A)`` or ``(A,)`` mean one market.
            entry_price: Same shape as ``size``, > 0 where ``size != 0``.
            fund_usd: Initial insurance fund (held in stable assets), scalar or ``(E,)``,
                >= 0.
            collateral_units: ``(E, A, K)`` units of ``K`` collateral assets per account,
                >= 0 (default none: ``K = 0``).
            collateral_price: ``(E, K)`` or ``(K,)`` price, > 0, at which the initial
                ledger total counts those units (default 1: par); read the ledger at the
                same price for it to close.
            fund_segments_usd: ``(E, G)`` or ``(G,)`` cash of ``G`` segmented insurance
                funds, >= 0 (default none: ``G = 0``, the fund is shared). Pair it with
                ``fund_usd=0``: a segmented exchange never uses the shared fund.

        Raises:
            ValueError: Shapes disagree, a value is not finite, an open position has no
                positive entry price, the fund, a fund segment or a collateral balance is
                negative, or a collateral price is not > 0.
        """
        c = np.array(collateral_usd, dtype=np.float64, ndmin=2, order="C")
        q = np.array(size, dtype=np.float64, ndmin=2, order="C")
        e = np.array(entry_price, dtype=np.float64, ndmin=2, order="C")
        if q.ndim == 2:
            q = q[:, :, None].copy()
        if e.ndim == 2:
            e = e[:, :, None].copy()
        if c.ndim != 2 or q.ndim != 3 or q.shape != e.shape or q.shape[:2] != c.shape:
            raise ValueError(
                "collateral_usd must be (n_envs, n_accounts) and size, entry_price "
                f"(n_envs, n_accounts[, n_markets]), got {c.shape}, {q.shape}, {e.shape}"
            )
        for name, arr in (("collateral_usd", c), ("size", q), ("entry_price", e)):
            if not np.isfinite(arr).all():
                raise ValueError(f"{name} must be finite, got {arr[~np.isfinite(arr)].flat[0]!r}")
        if ((q != 0.0) & (e <= 0.0)).any():
            raise ValueError("entry_price must be > 0 for every open position")
        n_envs = c.shape[0]
        fund = np.array(np.broadcast_to(np.asarray(fund_usd, dtype=np.float64), (n_envs,)))
        if not np.isfinite(fund).all() or (fund < 0.0).any():
            raise ValueError(f"fund_usd must be finite and >= 0, got {fund_usd!r}")
        units = _collateral_units(collateral_units, c.shape)
        counterparty_size = -q.sum(axis=1)
        counterparty_cash = (q * e).sum(axis=(1, 2))
        portfolio = FundPortfolio.from_stable(fund)
        # The ledger total at a mark of 1 (it does not depend on the mark once the counterparty
        # balances the book): ledger_total's sum, in its order, of what a new state holds.
        # The fund's value is its stable bucket plus the empty buckets' zeros; the vault,
        # fees, rewards and bad debt add (and subtract) zeros, of which only the first can
        # change a bit (-0.0 + 0.0 is +0.0). tests/envs/test_fast_paths.py checks this
        # against ledger_total, bit for bit.
        upnl = (q * (1.0 - e)).sum(axis=2)
        initial_total = (
            (c + upnl).sum(axis=1)
            + (portfolio.stable_usd + 0.0)
            + 0.0
            + counterparty_cash
            + counterparty_size.sum(axis=1)
        )
        if units.shape[2] > 0:  # K = 0 adds nothing, not even a rounding
            price = collateral_prices(
                "collateral_price",
                1.0 if collateral_price is None else collateral_price,
                n_envs,
                units.shape[2],
            )
            initial_total = initial_total + (units * price[:, None, :]).sum(axis=(1, 2))
        segments = _fund_segments(fund_segments_usd, n_envs)
        if segments.shape[1] > 0:  # G = 0 adds nothing, not even a rounding
            initial_total = initial_total + segments.sum(axis=1)
        return cls(
            collateral_usd=c,
            size=q,
            entry_price=e,
            counterparty_size=counterparty_size,
            counterparty_cash_usd=counterparty_cash,
            fund=portfolio,
            vault=np.zeros((n_envs, vault_width(q.shape[2]))),
            fee_revenue_usd=np.zeros(n_envs),
            liquidator_rewards_usd=np.zeros(n_envs),
            unrecovered_usd=np.zeros(n_envs),
            net_deposits_usd=np.zeros(n_envs),
            initial_total_usd=initial_total,
            collateral_units=units,
            fund_segments_usd=segments,
        )

    def copy(self) -> SimState:
        """Deep copy (every array copied, the fund's too)."""
        return self._map_arrays(lambda a: np.array(a, copy=True))

    def take(self, rows: ArrayLike) -> SimState:
        """A new state holding only exchanges ``rows`` (copies), in that order."""
        idx = np.asarray(rows, dtype=np.int64)
        return self._map_arrays(lambda a: np.array(a[idx], copy=True))

    def _map_arrays(self, fn: Callable[[FloatArray], FloatArray]) -> SimState:
        """A new state of ``fn`` applied to every array, the fund's included."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, FundPortfolio):
                out[f.name] = FundPortfolio(
                    **{g.name: fn(getattr(value, g.name)) for g in fields(FundPortfolio)}
                )
            else:
                out[f.name] = fn(value)
        return SimState(**out)


def _collateral_units(units: ArrayLike | None, shape: tuple[int, ...]) -> FloatArray:
    """``units`` as a checked ``(E, A, K)`` array; ``(E, A, 0)`` for ``None``."""
    if units is None:
        return np.zeros((*shape, 0))
    u = np.array(units, dtype=np.float64, order="C")
    if u.ndim != 3 or u.shape[:2] != shape:
        raise ValueError(
            f"collateral_units must be (n_envs, n_accounts, n_assets) with (n_envs, "
            f"n_accounts) = {shape}, got shape {u.shape}"
        )
    if not np.isfinite(u).all() or (u < 0.0).any():
        bad = u[~(np.isfinite(u) & (u >= 0.0))].flat[0]
        raise ValueError(f"collateral_units must be finite and >= 0, got {bad!r}")
    return u


def _fund_segments(segments: ArrayLike | None, n_envs: int) -> FloatArray:
    """``segments`` (``(E, G)`` or ``(G,)``) as a checked ``(E, G)``; ``(E, 0)`` for ``None``."""
    if segments is None:
        return np.zeros((n_envs, 0))
    s = np.asarray(segments, dtype=np.float64)
    if s.ndim == 1:
        s = np.broadcast_to(s, (n_envs, s.shape[0]))
    if s.ndim != 2 or s.shape[0] != n_envs:
        raise ValueError(
            f"fund_segments_usd must be (n_envs, n_segments) with n_envs = {n_envs}, or "
            f"(n_segments,), got shape {np.shape(segments)}"
        )
    ok = np.isfinite(s) & (s >= 0.0)
    if not ok.all():
        raise ValueError(f"fund_segments_usd must be finite and >= 0, got {s[~ok].flat[0]!r}")
    return np.array(s, dtype=np.float64, order="C")


def per_asset(name: str, value: ArrayLike, n_envs: int, n_assets: int) -> FloatArray:
    """``value`` (``(E, K)``, ``(K,)`` or scalar) broadcast to a contiguous ``(E, K)`` copy.

    Raises:
        ValueError: It does not broadcast; the message names ``name`` and the shapes allowed.
    """
    v = np.asarray(value, dtype=np.float64)
    try:
        return kernel_array(v, (n_envs, n_assets))
    except ValueError:
        raise ValueError(
            f"{name} must be (n_envs, n_assets) = ({n_envs}, {n_assets}) or (n_assets,), "
            f"got shape {v.shape}"
        ) from None


def collateral_prices(name: str, value: ArrayLike, n_envs: int, n_assets: int) -> FloatArray:
    """A collateral price ``value`` (``(E, K)``, ``(K,)`` or scalar) as a checked ``(E, K)``.

    Raises:
        ValueError: It does not broadcast to ``(E, K)``, or an entry is not finite and > 0
            (the message names ``name``, the value and the allowed range).
    """
    out = per_asset(name, value, n_envs, n_assets)
    ok = np.isfinite(out) & (out > 0.0)
    if not ok.all():
        raise ValueError(f"{name} must be finite and > 0 (USD per unit), got {out[~ok].flat[0]!r}")
    return out


def marks_2d(mark: ArrayLike, n_envs: int, n_markets: int) -> FloatArray:
    """``mark`` as an ``(E, M)`` array: ``(E,)`` (one market) and scalars broadcast."""
    m = np.asarray(mark, dtype=np.float64)
    if m.ndim == 1 and n_markets == 1:
        m = m[:, None]
    return kernel_array(m, (n_envs, n_markets))


def open_interest_usd(state: SimState, mark: ArrayLike) -> FloatArray:
    """One side's open interest per exchange and market, ``(E, M)``: half the gross notional."""
    m = marks_2d(mark, state.n_envs, state.n_markets)
    return np.asarray(0.5 * np.abs(state.size).sum(axis=1) * m, dtype=np.float64)


def ledger_total(
    state: SimState, mark: ArrayLike, collateral_px: ArrayLike | None = None
) -> FloatArray:
    """Sum of every ledger line per exchange at ``mark`` (``(E,)`` or ``(E, M)``).

    accounts' collateral + their collateral assets at ``collateral_px`` (``(E, K)`` or
    ``(K,)``; required when the state has collateral assets, ignored with none) + their
    unrealised PnL in every market + the fund at its last mark +
    the fund's segments (their cash) + the vault's cash and inventory at mark (in every market) +
    fee revenue + liquidator rewards +
    the counterparty's cash and position at mark - bad debt absorbed by the exchange. It must
    stay ``initial_total_usd + net_deposits_usd``.
    """
    m = marks_2d(mark, state.n_envs, state.n_markets)
    upnl = (state.size * (m[:, None, :] - state.entry_price)).sum(axis=2)
    accounts = (state.collateral_usd + upnl).sum(axis=1)
    n_assets = state.n_collateral
    if n_assets > 0:
        if collateral_px is None:
            raise ValueError(
                f"collateral_px is required: the state holds {n_assets} collateral assets"
            )
        px = collateral_prices("collateral_px", collateral_px, state.n_envs, n_assets)
        accounts = accounts + (state.collateral_units * px[:, None, :]).sum(axis=(1, 2))
    if state.n_fund_segments > 0:  # G = 0 adds nothing, not even a rounding
        accounts = accounts + state.fund_segments_usd.sum(axis=1)
    total = (
        accounts
        + state.fund_usd
        + state.vault[:, V_CASH]
        + state.vault[:, V_SIZE] * m[:, 0]
        + _vault_other_markets(state, m)
        + state.fee_revenue_usd
        + state.liquidator_rewards_usd
        + state.counterparty_cash_usd
        + (state.counterparty_size * m).sum(axis=1)
        - state.unrecovered_usd
    )
    return np.asarray(total, dtype=np.float64)


def _vault_other_markets(state: SimState, m: FloatArray) -> FloatArray | float:
    """The vault's inventory in markets 1 .. M - 1 at mark (0.0 with one market: no rounding)."""
    if state.n_markets == 1:
        return 0.0
    cols = [inventory_column(j) for j in range(1, state.n_markets)]
    out: FloatArray = (state.vault[:, cols] * m[:, 1:]).sum(axis=1)
    return out


def ledger_error(
    state: SimState, mark: ArrayLike, collateral_px: ArrayLike | None = None
) -> FloatArray:
    """``ledger_total - (initial_total + net deposits)`` per exchange; zero up to rounding.

    With collateral assets, zero when ``collateral_px`` is the price the state was created
    at (see the module docstring).
    """
    total = ledger_total(state, mark, collateral_px)
    return total - (state.initial_total_usd + state.net_deposits_usd)

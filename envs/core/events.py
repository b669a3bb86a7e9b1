"""What one tick of the margin engine did, per exchange: :class:`StepEvents`.

The record is one ``(n_envs, N_EVENTS)`` float64 array. The compiled kernels
(:mod:`fundgym.envs.core.kernels`) write into it by column (the ``EV_*`` constants below, which
numba folds into the code); Python reads it through named fields, each an ``(n_envs,)`` view of one
column. Field names feed the environment's ``info`` keys and the evaluation metrics, so they are
part of the public interface.
"""

from __future__ import annotations

from typing import Any, ClassVar, overload

import numpy as np
from numpy.typing import ArrayLike

FloatArray = np.ndarray[Any, np.dtype[np.float64]]
IntArray = np.ndarray[Any, np.dtype[np.int64]]

#: Columns of :attr:`StepEvents.data`, in :data:`FIELDS` order.
EV_N_LIQUIDATIONS = 0
EV_LIQUIDATION_VOLUME = 1
EV_LIQUIDATION_FEES = 2
EV_FUND_FEE_INCOME = 3
EV_LIQUIDATOR_REWARDS = 4
EV_BAD_DEBT = 5
EV_SHORTFALL = 6
EV_ADL_VOLUME = 7
EV_ADL_HAIRCUT = 8
EV_SOCIALIZED_LOSS = 9
EV_UNRECOVERED = 10
EV_TRADING_FEES = 11
EV_FUND_TRADING_FEE_INCOME = 12
EV_LIQUIDATION_SELL = 13
EV_LIQUIDATION_BUY = 14
EV_N_BELOW_BANKRUPTCY = 15
EV_ADL_OVERSHOOT = 16
EV_VAULT_TAKEOVERS = 17
EV_VAULT_TAKEOVER_USD = 18
EV_VAULT_UNWIND_USD = 19
EV_VAULT_LOSS = 20
EV_LIQUIDATOR_ABSORBED = 21
EV_SETTLEMENT_PRICE = 22
EV_MARKET_CLOSED = 23
EV_FLOORED_SHORT_LIQUIDATION = 24
EV_FLOORED_FUND_FEE_INCOME = 25
EV_ATTACKER_WITHDRAWN = 26
EV_VAULT_ADL = 27
N_EVENTS = 28


class _Column:
    """A named ``(n_envs,)`` float view of one column of :attr:`StepEvents.data`."""

    def __init__(self, col: int) -> None:
        self.col = col

    @overload
    def __get__(self, obj: None, owner: type[StepEvents]) -> _Column: ...

    @overload
    def __get__(self, obj: StepEvents, owner: type[StepEvents]) -> FloatArray: ...

    def __get__(self, obj: StepEvents | None, owner: type[StepEvents]) -> FloatArray | _Column:
        if obj is None:
            return self
        out: FloatArray = obj.data[:, self.col]
        return out

    def __set__(self, obj: StepEvents, value: ArrayLike) -> None:
        obj.data[:, self.col] = value


class _CountColumn:
    """A count column read as ``int64`` (a copy: the record stores every column as float)."""

    def __init__(self, col: int) -> None:
        self.col = col

    @overload
    def __get__(self, obj: None, owner: type[StepEvents]) -> _CountColumn: ...

    @overload
    def __get__(self, obj: StepEvents, owner: type[StepEvents]) -> IntArray: ...

    def __get__(self, obj: StepEvents | None, owner: type[StepEvents]) -> IntArray | _CountColumn:
        if obj is None:
            return self
        return obj.data[:, self.col].astype(np.int64)

    def __set__(self, obj: StepEvents, value: ArrayLike) -> None:
        obj.data[:, self.col] = value


#: The ``(n_envs, n_markets)`` per-market splits a cross-path step sets (``None`` otherwise),
#: set after construction and copied by :meth:`StepEvents.copy`.
_MARKET_FIELDS = (
    "market_fund_paid_usd",
    "market_adl_volume_usd",
    "market_adl_haircut_usd",
    "market_socialized_usd",
    "market_unrecovered_usd",
)


class StepEvents:
    """What one tick did, per exchange: every field is an ``(n_envs,)`` array.

    Money fields are USD over the tick; ``bad_debt_usd = shortfall_usd + socialized_loss_usd
    + unrecovered_usd`` up to rounding (what is deleveraged at the bankruptcy price shows in
    ``adl_haircut_usd`` instead).

    Attributes:
        data: The ``(n_envs, N_EVENTS)`` float64 array behind every field (``EV_*`` columns).
        market_flow_usd: ``(n_envs, n_markets, 2)`` liquidation flow per market, ``[..., 0]``
            sold (longs) and ``[..., 1]`` bought (shorts), at each market's book price before
            impact and after ADL took its part off: what moves each market's own price.
            Set by a step over several markets (``None`` for one market, whose flow is
            ``liquidation_sell_usd`` / ``liquidation_buy_usd``); those two columns are then
            the sums over markets. Every other column of a multi-market step is likewise the
            exchange's total over its markets, and ``n_liquidations`` counts accounts, not
            positions.
        collateral_seized_usd: ``(n_envs,)`` collateral assets seized from liquidated
            accounts, valued at the price the venue uses for them (``units x price``, before
            the haircut). Set by a step over a state with collateral assets (``None`` when it
            has none).
        collateral_depeg_loss_usd: ``(n_envs,)`` what those seized units were worth at their
            redemption value minus what they fetched (``units x (redemption - price x (1 -
            haircut))``; signed, zero when no redemption price was given). Set with
            ``collateral_seized_usd``.
        market_fund_paid_usd: ``(n_envs, n_markets)`` what the insurance fund (the shared
            fund, or the market's segment when segmented) paid toward each market's
            shortfalls, within the market's cap: the per-market split of ``shortfall_usd``,
            for contagion reports (which market's losses the fund carried). Set by a step
            on the several-markets path that liquidated someone (``None`` otherwise).
        market_adl_volume_usd: ``(n_envs, n_markets)`` notional deleveraged in each market
            (its legs' uncovered base against that market's opposite positions): the
            per-market split of ``adl_volume_usd`` (each row sums to it, to rounding of the
            sum's order), so a report can say whose positions an alt's crash closed. Set
            with ``market_fund_paid_usd`` (``None`` otherwise); like the next three, zero in
            a market without a liquidated leg.
        market_adl_haircut_usd: ``(n_envs, n_markets)`` the ADL haircut each market's
            counterparties bore, signed as ``adl_haircut_usd`` (each row sums to it). Set
            with ``market_fund_paid_usd``.
        market_socialized_usd: ``(n_envs, n_markets)`` the loss charged to each market's
            bearers (socialisation runs per market, on that market's own loss): the split
            of ``socialized_loss_usd`` (each row sums to it). Set with
            ``market_fund_paid_usd``.
        fund_transfer_usd: ``(n_envs, n_segments)`` what each fund segment lent the other
            segments' legs this tick, less what it borrowed (rows sum to zero): set by a
            segmented step with a transfer cap above zero (``None`` otherwise).
        market_unrecovered_usd: ``(n_envs, n_markets)`` what each market's legs left to the
            exchange after the fund, ADL and socialisation: the waterfall's part of
            ``unrecovered_usd``. Unrecovered that belongs to no market is left out: the
            shared fund paying less than it promised, or a rounding that would take a
            segment below zero, is booked as unrecovered (and taken off ``shortfall_usd``)
            after the waterfall, per fund, not per market. So a row sums to at most
            ``unrecovered_usd``, and exactly to ``unrecovered_usd - (market_fund_paid_usd
            row sum - shortfall_usd)`` (that gap is zero when the funds paid what they
            held). Set with ``market_fund_paid_usd``.
        n_liquidations: Accounts that received a liquidation order (``int64``, a copy).
        liquidation_volume_usd: Notional closed by the liquidation engine: book fills at the
            fill price plus deleveraged size at the ADL rule's price (the bankruptcy price, or
            the mark under ``hyperliquid``), in absolute value (an
            account whose debt exceeds its whole position's value, e.g. a short drained by
            funding in a pump, has a negative bankruptcy price).
        liquidation_fees_usd: Liquidation fees charged to liquidated accounts.
        fund_fee_income_usd: The insurance fund's share of those fees (booked into the fund
            by :func:`fundgym.envs.core.step.core_step`).
        liquidator_rewards_usd: The outside liquidators' share of those fees.
        bad_debt_usd: Loss beyond bankruptcy on book fills (and, under the ``hyperliquid``
            ADL rule, on deleveraged closes at a mark worse than bankruptcy), before anyone
            covers it.
        shortfall_usd: The part of ``bad_debt_usd`` the insurance fund paid.
        adl_volume_usd: Notional deleveraged against counterparties, at the ADL rule's price
            (absolute value).
        adl_haircut_usd: Mark-to-market profit the deleveraged counterparties gave up (zero
            under ``hyperliquid``, which closes them at the mark). Signed: negative when the
            price they close at is better for them than the mark (seen on
            ``oracle_manipulation``, -$26.5 in a run).
        socialized_loss_usd: The part of ``bad_debt_usd`` charged to open positions (the
            ``RiskParams.socialization`` convention); never more than the loss it covers.
        unrecovered_usd: The part of ``bad_debt_usd`` nobody could be made to bear (no fund
            left, no eligible bearer, or bearers capped at zero equity); the exchange's own
            capital absorbs it.
        trading_fees_usd: Taker fees charged by trading (zero from the margin engine).
        fund_trading_fee_income_usd: The fund's share of those trading fees.
        liquidation_sell_usd: Notional the liquidation engine sold into the book (longs), at
            the book price before impact; under the venue liquidation modes the sum over the
            tick's sub-steps of the flow that priced them. The base that ADL then closed
            against counterparties is taken off: it never reached the book, so it does not
            move the price (the fills were priced on the whole flow, before ADL was known).
        liquidation_buy_usd: Notional it bought from the book (shorts); with the sells, the
            flow that moves the price (endogenous impact).
        n_liquidations_below_bankruptcy: Liquidation orders whose fill landed past the
            account's bankruptcy price (the account ended the fill with negative equity, before
            the fund, ADL or socialisation covered it): Hyperliquid reports 302 of 63,637
            liquidation events so on 10 Oct 2025. Under the venue modes an account counts
            once per tick however many sub-step orders it received (as ``n_liquidations``
            counts it), and a takeover's close by the fund past bankruptcy, or a deficient
            account deleveraged after a refused fill, counts too.
        adl_overshoot_usd: Notional deleveraged beyond what was needed to close the shortfall
            the fund left: the base units beyond the fewest that, moved from the book's fill
            to the ADL rule's price, would cover it, valued at that price. Zero by construction
            under the rules that deleverage at the bankruptcy price (each unit then recovers
            exactly its own shortfall); under ``hyperliquid`` it is the base closed at a mark
            better than the bankrupt account's bankruptcy price beyond that need (the account
            keeps the surplus). See :mod:`fundgym.envs.core.adl`.
        vault_takeovers: Accounts the backstop vault took over (``int64``, a copy;
            :mod:`fundgym.envs.core.vault`).
        vault_takeover_usd: Notional of the positions it took over, at the oracle.
        vault_unwind_usd: Notional it sold back into the book (at the book price before
            impact; part of ``liquidation_sell_usd`` / ``liquidation_buy_usd``).
        vault_loss_usd: What the vault lost beyond its whole equity when it could not carry
            its inventory: passed down the waterfall as a shortfall (the fund pays what it
            can, the exchange the rest), so it is part of ``bad_debt_usd``.
        liquidator_absorbed_usd: Liquidation notional outside liquidators took at the oracle
            (the rest of the engine's orders walked the book): their capacity rises with their
            share of the fee and with the book's depth (:mod:`fundgym.envs.core.liquidators`).
        settlement_price: The average index every position closed at, on the tick a
            scenario's ``settlement`` event settled the market (0 on other ticks;
            :mod:`fundgym.envs.core.venue_events`). The debt of accounts it left bankrupt is in
            ``bad_debt_usd`` and covered as the engine's is (fund, then unrecovered).
        market_closed: 1 on every tick of a settled market (no trading, arrivals, funding or
            liquidations), 0 before.
        floored_short_liquidation_usd: Notional of shorts the engine bought back while the
            oracle sat at its floor above the mark: liquidations a floored oracle forced on
            shorts opened at the real price (LUNA, May 2022).
        floored_fund_fee_income_usd: The fund's income from liquidating those shorts (fees,
            and takeover surplus) in those ticks; a long liquidated in a floored tick is not
            the floor's doing and is left out. (The core kernels write the shorts' income
            every tick; the tick keeps it only while the oracle is floored.)
        attacker_withdrawn_usd: What the scenario's attacker withdrew against its unrealised
            PnL this tick (it leaves through ``net_deposits_usd``; Mango, Oct 2022).
        vault_adl_usd: Notional of the backstop vault's own inventory deleveraged at the
            oracle against the opposite side's accounts, after the vault lost more than its
            loss limit (Hyperliquid's Liquidator vault; :mod:`fundgym.envs.core.vault`). Part
            of ``adl_volume_usd``.
    """

    n_liquidations = _CountColumn(EV_N_LIQUIDATIONS)
    liquidation_volume_usd = _Column(EV_LIQUIDATION_VOLUME)
    liquidation_fees_usd = _Column(EV_LIQUIDATION_FEES)
    fund_fee_income_usd = _Column(EV_FUND_FEE_INCOME)
    liquidator_rewards_usd = _Column(EV_LIQUIDATOR_REWARDS)
    bad_debt_usd = _Column(EV_BAD_DEBT)
    shortfall_usd = _Column(EV_SHORTFALL)
    adl_volume_usd = _Column(EV_ADL_VOLUME)
    adl_haircut_usd = _Column(EV_ADL_HAIRCUT)
    socialized_loss_usd = _Column(EV_SOCIALIZED_LOSS)
    unrecovered_usd = _Column(EV_UNRECOVERED)
    trading_fees_usd = _Column(EV_TRADING_FEES)
    fund_trading_fee_income_usd = _Column(EV_FUND_TRADING_FEE_INCOME)
    liquidation_sell_usd = _Column(EV_LIQUIDATION_SELL)
    liquidation_buy_usd = _Column(EV_LIQUIDATION_BUY)
    n_liquidations_below_bankruptcy = _CountColumn(EV_N_BELOW_BANKRUPTCY)
    adl_overshoot_usd = _Column(EV_ADL_OVERSHOOT)
    vault_takeovers = _CountColumn(EV_VAULT_TAKEOVERS)
    vault_takeover_usd = _Column(EV_VAULT_TAKEOVER_USD)
    vault_unwind_usd = _Column(EV_VAULT_UNWIND_USD)
    vault_loss_usd = _Column(EV_VAULT_LOSS)
    liquidator_absorbed_usd = _Column(EV_LIQUIDATOR_ABSORBED)
    settlement_price = _Column(EV_SETTLEMENT_PRICE)
    market_closed = _Column(EV_MARKET_CLOSED)
    floored_short_liquidation_usd = _Column(EV_FLOORED_SHORT_LIQUIDATION)
    floored_fund_fee_income_usd = _Column(EV_FLOORED_FUND_FEE_INCOME)
    attacker_withdrawn_usd = _Column(EV_ATTACKER_WITHDRAWN)
    vault_adl_usd = _Column(EV_VAULT_ADL)

    FIELDS: ClassVar[tuple[str, ...]] = (
        "n_liquidations",
        "liquidation_volume_usd",
        "liquidation_fees_usd",
        "fund_fee_income_usd",
        "liquidator_rewards_usd",
        "bad_debt_usd",
        "shortfall_usd",
        "adl_volume_usd",
        "adl_haircut_usd",
        "socialized_loss_usd",
        "unrecovered_usd",
        "trading_fees_usd",
        "fund_trading_fee_income_usd",
        "liquidation_sell_usd",
        "liquidation_buy_usd",
        "n_liquidations_below_bankruptcy",
        "adl_overshoot_usd",
        "vault_takeovers",
        "vault_takeover_usd",
        "vault_unwind_usd",
        "vault_loss_usd",
        "liquidator_absorbed_usd",
        "settlement_price",
        "market_closed",
        "floored_short_liquidation_usd",
        "floored_fund_fee_income_usd",
        "attacker_withdrawn_usd",
        "vault_adl_usd",
    )
    """Field names in column order (the ``info`` keys)."""

    __slots__ = (
        "collateral_depeg_loss_usd",
        "collateral_seized_usd",
        "data",
        "fund_transfer_usd",
        "market_adl_haircut_usd",
        "market_adl_volume_usd",
        "market_flow_usd",
        "market_fund_paid_usd",
        "market_socialized_usd",
        "market_unrecovered_usd",
    )

    def __init__(
        self,
        data: FloatArray,
        market_flow_usd: FloatArray | None = None,
        collateral_seized_usd: FloatArray | None = None,
        collateral_depeg_loss_usd: FloatArray | None = None,
    ) -> None:
        """Wrap ``data``, an ``(n_envs, N_EVENTS)`` float64 array (not copied).

        ``market_flow_usd``, when given, is the ``(n_envs, n_markets, 2)`` per-market split of
        the liquidation flow (not copied): see :attr:`market_flow_usd`.
        ``collateral_seized_usd`` and ``collateral_depeg_loss_usd``, when given, are
        ``(n_envs,)`` (not copied): see their attributes.
        """
        if data.ndim != 2 or data.shape[1] != N_EVENTS or data.dtype != np.float64:
            raise ValueError(
                f"StepEvents.data must be a float64 (n_envs, {N_EVENTS}) array, "
                f"got {data.dtype} {data.shape}"
            )
        if market_flow_usd is not None and (
            market_flow_usd.ndim != 3
            or market_flow_usd.shape[0] != data.shape[0]
            or market_flow_usd.shape[2] != 2
        ):
            raise ValueError(
                "StepEvents.market_flow_usd must be (n_envs, n_markets, 2), "
                f"got {market_flow_usd.shape}"
            )
        for name, arr in (
            ("collateral_seized_usd", collateral_seized_usd),
            ("collateral_depeg_loss_usd", collateral_depeg_loss_usd),
        ):
            if arr is not None and arr.shape != (data.shape[0],):
                raise ValueError(f"StepEvents.{name} must be (n_envs,), got {arr.shape}")
        self.data = data
        self.market_flow_usd = market_flow_usd
        self.collateral_seized_usd = collateral_seized_usd
        self.collateral_depeg_loss_usd = collateral_depeg_loss_usd
        self.fund_transfer_usd: FloatArray | None = None
        self.market_fund_paid_usd: FloatArray | None = None
        self.market_adl_volume_usd: FloatArray | None = None
        self.market_adl_haircut_usd: FloatArray | None = None
        self.market_socialized_usd: FloatArray | None = None
        self.market_unrecovered_usd: FloatArray | None = None

    @classmethod
    def zeros(cls, n_envs: int) -> StepEvents:
        """A tick in which nothing happened."""
        return cls(np.zeros((n_envs, N_EVENTS)))

    @property
    def n_envs(self) -> int:
        """Number of exchanges."""
        return int(self.data.shape[0])

    def copy(self) -> StepEvents:
        """An independent copy."""
        flow = None if self.market_flow_usd is None else self.market_flow_usd.copy()
        seized = self.collateral_seized_usd
        depeg = self.collateral_depeg_loss_usd
        out = StepEvents(
            self.data.copy(),
            flow,
            None if seized is None else seized.copy(),
            None if depeg is None else depeg.copy(),
        )
        for name in (*_MARKET_FIELDS, "fund_transfer_usd"):
            arr = getattr(self, name)
            setattr(out, name, None if arr is None else arr.copy())
        return out

    def as_dict(self) -> dict[str, FloatArray | IntArray]:
        """Field name to ``(n_envs,)`` array (views, except ``n_liquidations``)."""
        return {name: getattr(self, name) for name in self.FIELDS}

    def __repr__(self) -> str:
        return f"StepEvents(n_envs={self.n_envs})"


assert all(  # the column constants follow FIELDS
    getattr(StepEvents, name).col == col for col, name in enumerate(StepEvents.FIELDS)
)
assert len(StepEvents.FIELDS) == N_EVENTS

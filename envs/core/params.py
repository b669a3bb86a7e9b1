"""Risk parameters of one exchange (or one per exchange in a batch), validated on construction.

Every numeric field is a float or an array of shape ``(n_envs,)``, so a batch of exchanges can run
under different parameters in one array program (the environment's actions set them). Each numeric
field is a lever of :data:`fundgym.envs.levers.LEVERS`, which holds its default (dYdX v4 mainnet for
a large-cap market unless noted), unit and hard bounds; a value outside the hard bounds is an error
naming the field, the value and the bounds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, Literal, get_args

import numpy as np

from fundgym.envs.levers import LEVERS, Lever

FloatOrArray = float | np.ndarray[Any, np.dtype[np.float64]]
Fallback = Literal["adl", "socialize"]
FALLBACKS: tuple[str, ...] = ("adl", "socialize")
Socialization = Literal["profit_haircut", "drift"]
SOCIALIZATIONS: tuple[str, ...] = ("profit_haircut", "drift")
"""Loss-sharing conventions, in code order (``packed`` stores the index):

* ``profit_haircut`` (default): the loss is charged pro rata to positive unrealised PnL, each
  charge capped by that PnL (Percolator's equal haircut on profits; Hyperliquid: an account
  without a profitable position never bears it).
* ``drift``: pro rata to base size on both sides (Drift's funding-index convention).

Under either, no charge takes a bearer's equity below zero; what nobody can bear is
``unrecovered``.
"""

AdlPolicy = Literal["bitmex", "hyperliquid", "drift", "water_filling", "risk_pro_rata"]
ADL_POLICIES: tuple[str, ...] = get_args(AdlPolicy)
"""Auto-deleveraging rules, in code order (the kernels take the index; each is documented, with
its source, in :mod:`fundgym.envs.core.adl`). Counterparties are the opposite positions of
accounts not being liquidated that stay solvent when closed whole at the rule's price:

* ``bitmex`` (default): greedily in BitMEX rank order (PnL% x effective leverage), at the
  bankrupt side's size-weighted bankruptcy price.
* ``hyperliquid``: greedily by Hyperliquid's index (price ratio x leverage), at the mark; the
  bankrupt account's deficit against its bankruptcy price continues down the waterfall.
* ``drift``: every counterparty pro rata to its base size (Drift's funding-index key), at
  the batch bankruptcy price.
* ``water_filling``: the most levered first until leverages are equal, then all together
  (Campbell, Hey, Moallemi and Nutz 2026), at the batch bankruptcy price.
* ``risk_pro_rata``: every counterparty a fraction of its size proportional to its leverage
  (our reading of Chitra 2025/26's risk-aware pro rata), at the batch bankruptcy price.
"""

LiquidationMode = Literal["partial", "binance", "dydx_v4", "hyperliquid", "bitmex"]
LIQUIDATION_MODES: tuple[str, ...] = get_args(LiquidationMode)
"""Venue liquidation engines, in code order (the kernels take the index; each mode's rules,
parameters and sources are in :mod:`fundgym.envs.core.liquidation` and ``docs/liquidation.md``):

* ``partial`` (default): ``max_liquidation_fraction`` of each position per tick into the book,
  at least ``min_liquidation_notional_usd`` (the engine before the venue modes).
* ``binance``: the engine takes over the whole position with an IOC limited at the bankruptcy
  price; a deficient or unfillable account is closed at bankruptcy against the fund.
* ``dydx_v4``: 10% of a position per one-second block with dYdX's per-block caps, filled only
  at or better than the fillable price; what cannot fill is deleveraged.
* ``hyperliquid``: market orders, filled no worse than the account's bankruptcy price (an
  order the book cannot fill there waits) [E]; positions over $100k send 20% first, then the
  whole position during a 30 s cooldown; accounts below 2/3 of maintenance margin are taken
  over (by the backstop vault when the exchange has one, else by the fund).
* ``bitmex``: the fund takes over every liquidated position and its remaining margin, closes
  it in the book, and deleverages at bankruptcy only what it cannot pay.
"""

WATERFALL_STAGES: tuple[str, ...] = (
    "margin",
    "book",
    "vault",
    "fund",
    "adl",
    "socialize",
    "exchange",
)
"""The stages a loss can pass through, in the default order (``RiskParams.waterfall``):

* ``margin``: the account's own margin (first, always);
* ``book``: outside liquidators, then the book (second, always; the venue mode sizes the
  orders, :mod:`fundgym.envs.core.liquidation`, :mod:`fundgym.envs.core.liquidators`);
* ``vault``: the backstop vault's takeover (:mod:`fundgym.envs.core.vault`), right after the
  book when present: it acts on accounts before their fills, not on losses;
* ``fund``: the insurance fund pays shortfalls;
* ``adl``: auto-deleveraging (``adl_policy``);
* ``socialize``: socialised loss (``socialization``), after the fund and ADL;
* ``exchange``: the exchange's own capital absorbs the rest (last, always).

A sequence may leave out ``vault``, ``fund``, ``adl`` and ``socialize`` and may put ``adl``
before ``fund`` (deleverage first, the fund pays only what ADL could not place: not under
``dydx_v4``, whose engine deleverages only what the fund refused).
"""

#: Bits of :attr:`RiskParams.waterfall_code`, the sequence as the kernels read it. ``W_NO_ADL``
#: is bit 0, so the default sequence is code 0 and the one without ADL code 1, the codes of
#: ``fallback`` "adl" and "socialize".
W_NO_ADL, W_ADL_FIRST, W_NO_FUND, W_NO_SOCIALIZE, W_NO_VAULT = 1, 2, 4, 8, 16

#: Column of each numeric field in :meth:`RiskParams.packed` (the kernels read these).
P_MMR, P_IMR, P_LIQ_FEE, P_LIQ_FUND_SHARE, P_TAKER_FEE, P_TRADE_FUND_SHARE = 0, 1, 2, 3, 4, 5
P_MAX_LIQ_FRAC, P_MIN_LIQ_NOTIONAL, P_LIQUIDATOR_MULT = 6, 7, 8
P_UPNL_HAIRCUT, P_OI_CAP_FRAC, P_MARK_CAP_MULT = 9, 10, 11
N_PACKED = 12

#: The numeric fields in ``P_*`` column order.
_PACKED_FIELDS: tuple[str, ...] = (
    "mmr",
    "imr",
    "liquidation_fee_rate",
    "liquidation_fee_fund_share",
    "taker_fee_rate",
    "trading_fee_fund_share",
    "max_liquidation_fraction",
    "min_liquidation_notional_usd",
    "liquidator_capacity_mult",
    "unrealised_pnl_haircut_frac",
    "oi_cap_frac",
    "mark_cap_mult",
)
assert _PACKED_FIELDS.index("liquidator_capacity_mult") == P_LIQUIDATOR_MULT
assert _PACKED_FIELDS.index("mark_cap_mult") == P_MARK_CAP_MULT == N_PACKED - 1

#: The numeric fields' levers: :meth:`Lever.check` enforces their hard bounds.
_LEVERS: dict[str, Lever] = {name: LEVERS[name] for name in _PACKED_FIELDS}


@dataclass(frozen=True)
class MarginTiers:
    """Notional brackets for the maintenance requirement, Binance style.

    The requirement of a position of notional ``N`` in bracket ``k`` (``floor_usd[k] <= N <
    floor_usd[k+1]``) is ``N * mmr[k] - cum_usd[k]``, with ``cum_usd[k] = floor_usd[k] *
    (mmr[k] - mmr[k-1]) + cum_usd[k-1]`` so the requirement is continuous across brackets.

    Attributes:
        floor_usd: Lower notional bound of each bracket; starts at 0, strictly increasing.
        mmr: Maintenance margin ratio of each bracket, non-decreasing, each in (0, 1).
        cum_usd: Derived maintenance offsets (computed, not given).
    """

    floor_usd: tuple[float, ...]
    mmr: tuple[float, ...]
    cum_usd: tuple[float, ...] = field(init=False)

    def __post_init__(self) -> None:
        floors = np.asarray(self.floor_usd, dtype=np.float64)
        rates = np.asarray(self.mmr, dtype=np.float64)
        if floors.ndim != 1 or floors.shape != rates.shape or floors.size == 0:
            raise ValueError(
                "MarginTiers.floor_usd and .mmr must be non-empty 1-D sequences of equal length, "
                f"got {len(self.floor_usd)} and {len(self.mmr)}"
            )
        if not (np.isfinite(floors).all() and np.isfinite(rates).all()):
            raise ValueError(f"MarginTiers values must be finite, got {self.floor_usd}, {self.mmr}")
        if floors[0] != 0.0 or (np.diff(floors) <= 0).any():
            raise ValueError(
                f"MarginTiers.floor_usd must start at 0 and increase strictly, got {self.floor_usd}"
            )
        if (rates <= 0).any() or (rates >= 1).any() or (np.diff(rates) < 0).any():
            raise ValueError(
                f"MarginTiers.mmr must be non-decreasing values in (0, 1), got {self.mmr}"
            )
        cum = np.zeros_like(rates)
        for k in range(1, rates.size):  # a handful of brackets, computed once
            cum[k] = floors[k] * (rates[k] - rates[k - 1]) + cum[k - 1]
        object.__setattr__(self, "floor_usd", tuple(floors.tolist()))
        object.__setattr__(self, "mmr", tuple(rates.tolist()))
        object.__setattr__(self, "cum_usd", tuple(cum.tolist()))

    @property
    def base_mmr(self) -> float:
        """MMR of the first bracket; the controlled ``RiskParams.mmr`` scales the table by it."""
        return self.mmr[0]

    @classmethod
    def binance_btcusdt_2021(cls) -> MarginTiers:
        """Binance BTCUSDT brackets (2021): 0.4% to $50k, 0.5% to $250k, 1% to $1M, ..."""
        return cls(
            floor_usd=(0, 5e4, 2.5e5, 1e6, 1e7, 2e7, 5e7, 1e8, 2e8, 3e8),
            mmr=(0.004, 0.005, 0.01, 0.025, 0.05, 0.1, 0.125, 0.15, 0.25, 0.5),
        )


@dataclass(frozen=True)
class RiskParams:
    """The parameters a risk team sets, per exchange.

    The ranges below are the levers' hard bounds, declared in :data:`fundgym.envs.levers.LEVERS`.

    Attributes:
        mmr: Maintenance margin ratio, in (0, 1). dYdX large-cap 3%. With ``tiers`` set, the
            tier table is scaled by ``mmr / tiers.base_mmr``, so ``mmr`` stays the one lever.
        imr: Initial margin ratio, in [mmr, 1]: max leverage on opening is ``1 / imr``.
            dYdX large-cap 5%.
        liquidation_fee_rate: Maximum liquidation fee as a fraction of fill notional, in
            [0, 1). dYdX ``max_liquidation_fee_ppm`` = 15,000 (1.5%).
        liquidation_fee_fund_share: Share of the liquidation fee paid to the insurance fund,
            the rest to the liquidator, in [0, 1]. dYdX sends all of it to the fund (1.0);
            Drift splits it (``if_liquidation_fee`` vs ``liquidator_fee``).
        taker_fee_rate: Trading fee on traded notional, in [0, 0.1]. 5 bps.
        trading_fee_fund_share: Share of trading fees routed to the insurance fund, in [0, 1].
        max_liquidation_fraction: Largest fraction of a position liquidated per step, in
            (0, 1]. dYdX liquidates 10% per block; with one-minute steps we default to 25%.
        min_liquidation_notional_usd: Minimum notional liquidated per step (dYdX $1,000);
            smaller positions are closed whole.
        liquidator_capacity_mult: Outside liquidators' capacity as a multiple of a
            competitive market's (:mod:`fundgym.envs.core.liquidators`), in [0, 100]; 0: the
            venue admits none and every order walks the book.
        unrealised_pnl_haircut_frac: Share of unrealised profit an account may not withdraw
            or borrow against, in [0, 1]: 0 lets it take all of it (Mango, Oct 2022), 1 none.
        oi_cap_frac: Open-interest cap as a multiple of the starting open interest; new
            positions that would lift open interest above it are refused (0: no cap).
        mark_cap_mult: The mark (and the oracle the margin engine reads) is capped at this
            multiple of the mark's 8-hour average (0: no cap; Hyperliquid after XPL: 10).
        fallback: What covers a shortfall the fund cannot pay: ``"adl"`` (auto-deleverage
            opposite positions by the ``adl_policy`` rule; then socialise any remainder) or
            ``"socialize"`` (share the loss by the ``socialization`` convention).
        tiers: Optional notional brackets for the maintenance requirement.
        socialization: How a loss nobody else covers is shared (:data:`SOCIALIZATIONS`).
        adl_policy: Which opposite positions auto-deleveraging closes, and how
            (:data:`ADL_POLICIES`).
        liquidation_mode: The venue whose liquidation engine runs (:data:`LIQUIDATION_MODES`);
            ``max_liquidation_fraction`` and ``min_liquidation_notional_usd`` apply under
            ``partial`` only, the other modes carry their venue's own sizes.
    """

    mmr: FloatOrArray = LEVERS["mmr"].default
    imr: FloatOrArray = LEVERS["imr"].default
    liquidation_fee_rate: FloatOrArray = LEVERS["liquidation_fee_rate"].default
    liquidation_fee_fund_share: FloatOrArray = LEVERS["liquidation_fee_fund_share"].default
    taker_fee_rate: FloatOrArray = LEVERS["taker_fee_rate"].default
    trading_fee_fund_share: FloatOrArray = LEVERS["trading_fee_fund_share"].default
    max_liquidation_fraction: FloatOrArray = LEVERS["max_liquidation_fraction"].default
    min_liquidation_notional_usd: FloatOrArray = LEVERS["min_liquidation_notional_usd"].default
    liquidator_capacity_mult: FloatOrArray = LEVERS["liquidator_capacity_mult"].default
    unrealised_pnl_haircut_frac: FloatOrArray = LEVERS["unrealised_pnl_haircut_frac"].default
    oi_cap_frac: FloatOrArray = LEVERS["oi_cap_frac"].default
    mark_cap_mult: FloatOrArray = LEVERS["mark_cap_mult"].default
    fallback: Fallback = "adl"
    tiers: MarginTiers | None = None
    socialization: Socialization = "profit_haircut"
    adl_policy: AdlPolicy = "bitmex"
    liquidation_mode: LiquidationMode = "partial"
    waterfall: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        for name, lever in _LEVERS.items():
            object.__setattr__(self, name, lever.check(getattr(self, name), "RiskParams."))
        cap = np.asarray(self.mark_cap_mult)
        if np.any((cap > 0.0) & (cap < 1.0)):
            raise ValueError(
                f"RiskParams.mark_cap_mult must be 0 (no cap) or >= 1 (a cap below the mark's "
                f"own average would pin it there), got {self.mark_cap_mult!r}"
            )
        if np.any(np.asarray(self.imr) < np.asarray(self.mmr)):
            raise ValueError(
                f"RiskParams.imr must be >= mmr (initial margin covers maintenance), "
                f"got imr={self.imr!r}, mmr={self.mmr!r}"
            )
        if self.fallback not in FALLBACKS:
            raise ValueError(
                f"RiskParams.fallback must be one of {FALLBACKS}, got {self.fallback!r}"
            )
        if self.socialization not in SOCIALIZATIONS:
            raise ValueError(
                f"RiskParams.socialization must be one of {SOCIALIZATIONS}, "
                f"got {self.socialization!r}"
            )
        if self.adl_policy not in ADL_POLICIES:
            raise ValueError(
                f"RiskParams.adl_policy must be one of {ADL_POLICIES}, got {self.adl_policy!r}"
            )
        if self.liquidation_mode not in LIQUIDATION_MODES:
            raise ValueError(
                f"RiskParams.liquidation_mode must be one of {LIQUIDATION_MODES}, "
                f"got {self.liquidation_mode!r}"
            )
        if self.tiers is not None and not isinstance(self.tiers, MarginTiers):
            raise ValueError(f"RiskParams.tiers must be a MarginTiers or None, got {self.tiers!r}")
        if self.waterfall is not None:
            object.__setattr__(self, "waterfall", tuple(self.waterfall))
            check_waterfall(self.waterfall, self.fallback, self.liquidation_mode)

    @classmethod
    def trusted(cls, **values: Any) -> RiskParams:
        """Parameters from values valid by construction, without checking them again.

        For a caller that builds parameters every decision from values it has already bounded
        (the environment maps clipped action positions into the levers' action ranges, which
        lie inside the hard bounds): the checks cost more than the rest of the construction.
        Numeric values must be floats or float64 ``(n_envs,)`` arrays inside their levers'
        hard bounds, with ``imr >= mmr``; anything from a user goes through the constructor.

        Args:
            **values: Fields by name; those left out take their defaults.

        Raises:
            TypeError: A name that is not a field.
        """
        out = object.__new__(cls)
        # The instance's dict filled directly, from the fields' (name, default) pairs read
        # once (``dataclasses.fields`` and a frozen ``__setattr__`` per field were most of a
        # decision's cost of building its parameters).
        attrs = out.__dict__
        for name, default in _TRUSTED_FIELDS:
            attrs[name] = values.pop(name, default)
        if values:
            raise TypeError(f"RiskParams has no field {next(iter(values))!r}")
        return out

    def take(self, env: np.ndarray[Any, np.dtype[np.int64]]) -> RiskParams:
        """Per-exchange arrays indexed by ``env`` (one entry per row), without re-validating.

        Indexing already-validated values cannot make them invalid, and the population packs a
        subset of accounts this way several times a tick; validation would dominate its cost.
        """
        out = object.__new__(RiskParams)
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in _LEVERS and np.ndim(value) == 1:
                value = np.asarray(value, dtype=np.float64)[env]
            object.__setattr__(out, f.name, value)
        return out

    def packed(self, n_envs: int) -> np.ndarray[Any, np.dtype[np.float64]]:
        """The numeric fields as one C-contiguous ``(n_envs, N_PACKED)`` array (``P_*`` columns).

        The compiled kernels read parameters this way: one array argument instead of eight.
        """
        return self._cached(("packed", "mmr", n_envs), lambda _: self._pack(n_envs))

    def _pack(self, n_envs: int) -> np.ndarray[Any, np.dtype[np.float64]]:
        out = np.empty((n_envs, N_PACKED))
        for col, name in enumerate(_PACKED_FIELDS):
            out[:, col] = getattr(self, name)  # a float fills the column, an array is copied
        return out

    def tier_table(self) -> tuple[np.ndarray[Any, np.dtype[np.float64]], ...]:
        """``(floor_usd, mmr, cum_usd, scale_div)`` arrays for the kernels; empty when flat.

        ``scale_div`` holds one number, ``tiers.base_mmr`` (1.0 without tiers): a position's
        tiered requirement is ``(N x mmr_k - cum_k) x mmr / base_mmr``.
        """
        if self.tiers is None:
            empty = np.zeros(0)
            return empty, empty, empty, np.ones(1)
        t = self.tiers
        return (
            np.asarray(t.floor_usd, dtype=np.float64),
            np.asarray(t.mmr, dtype=np.float64),
            np.asarray(t.cum_usd, dtype=np.float64),
            np.array([t.base_mmr]),
        )

    @property
    def fallback_code(self) -> int:
        """Index of ``fallback`` in :data:`FALLBACKS` (0 = ADL, 1 = socialise)."""
        return FALLBACKS.index(self.fallback)

    @property
    def stages(self) -> tuple[str, ...]:
        """The waterfall in force: ``waterfall``, or the default order.

        The default leaves ``adl`` out when ``fallback`` is "socialize".
        """
        if self.waterfall is not None:
            return self.waterfall
        return tuple(s for s in WATERFALL_STAGES if s != "adl" or self.fallback == "adl")

    @property
    def waterfall_code(self) -> int:
        """:attr:`stages` as the kernels read it: ``W_*`` bits (0: the default sequence)."""
        stages = self.stages
        code = 0
        if "adl" not in stages:
            code |= W_NO_ADL
        elif "fund" in stages and stages.index("adl") < stages.index("fund"):
            code |= W_ADL_FIRST
        if "fund" not in stages:
            code |= W_NO_FUND
        if "socialize" not in stages:
            code |= W_NO_SOCIALIZE
        if "vault" not in stages:
            code |= W_NO_VAULT
        return code

    @property
    def socialization_code(self) -> int:
        """Index of ``socialization`` in :data:`SOCIALIZATIONS`."""
        return SOCIALIZATIONS.index(self.socialization)

    @property
    def adl_policy_code(self) -> int:
        """Index of ``adl_policy`` in :data:`ADL_POLICIES`."""
        return ADL_POLICIES.index(self.adl_policy)

    @property
    def liquidation_mode_code(self) -> int:
        """Index of ``liquidation_mode`` in :data:`LIQUIDATION_MODES` (0 = ``partial``)."""
        return LIQUIDATION_MODES.index(self.liquidation_mode)

    def column(self, name: str) -> np.ndarray[Any, np.dtype[np.float64]]:
        """Field ``name`` as an ``(n_envs, 1)`` or ``(1, 1)`` column for account arrays."""
        return self._cached(("column", name), lambda v: v.reshape(-1, 1))

    def per_env(self, name: str, n_envs: int) -> np.ndarray[Any, np.dtype[np.float64]]:
        """Field ``name`` broadcast to shape ``(n_envs,)``."""
        return self._cached(("per_env", name, n_envs), lambda v: np.broadcast_to(v, (n_envs,)))

    def _cached(
        self,
        key: tuple[Any, ...],
        make: Callable[[np.ndarray[Any, np.dtype[np.float64]]], np.ndarray[Any, Any]],
    ) -> np.ndarray[Any, np.dtype[np.float64]]:
        """Memoised read-only views: the step asks for the same shapes every tick."""
        cache: dict[tuple[Any, ...], np.ndarray[Any, Any]] = self.__dict__.setdefault(
            "_view_cache", {}
        )
        view = cache.get(key)
        if view is None:
            view = make(np.asarray(getattr(self, key[1]), dtype=np.float64))
            view.flags.writeable = False
            cache[key] = view
        return view


#: :class:`RiskParams`' fields as ``(name, default)`` pairs in declaration order, read once for
#: :meth:`RiskParams.trusted`.
_TRUSTED_FIELDS: tuple[tuple[str, Any], ...] = tuple(
    (f.name, f.default) for f in fields(RiskParams)
)


def check_waterfall(stages: tuple[str, ...], fallback: str, liquidation_mode: str) -> None:
    """Raise ``ValueError`` naming what is wrong with a waterfall sequence.

    The rules are :data:`WATERFALL_STAGES`'s.
    """
    where = f"RiskParams.waterfall = {list(stages)}"
    unknown = [s for s in stages if s not in WATERFALL_STAGES]
    if unknown:
        raise ValueError(f"{where}: unknown stage {unknown[0]!r}; allowed: {WATERFALL_STAGES}")
    if len(set(stages)) != len(stages):
        raise ValueError(f"{where}: a stage appears twice")
    if stages[:2] != ("margin", "book") or stages[-1:] != ("exchange",):
        raise ValueError(f"{where}: must start with 'margin', 'book' and end with 'exchange'")
    if "vault" in stages and stages[2] != "vault":
        raise ValueError(f"{where}: 'vault' comes right after 'book' (it takes accounts over)")
    if "socialize" in stages:
        i = stages.index("socialize")
        if any(s in stages[i:] for s in ("fund", "adl")):
            raise ValueError(f"{where}: 'socialize' comes after 'fund' and 'adl'")
    if ("adl" in stages) != (fallback == "adl"):
        raise ValueError(
            f"{where} and fallback = {fallback!r} disagree: fallback 'adl' goes with an 'adl' "
            "stage, 'socialize' with none"
        )
    adl_first = "adl" in stages and "fund" in stages and stages.index("adl") < stages.index("fund")
    if adl_first and liquidation_mode == "dydx_v4":
        raise ValueError(
            f"{where}: 'adl' before 'fund' is not defined under liquidation_mode 'dydx_v4' "
            "(its engine deleverages only what the fund refused)"
        )

"""Venue presets: real venues' published risk parameters, held fixed by a static policy.

A preset is a venue as the evaluation environment can express it: its fees and margins (the
levers a static policy holds), its margin tiers where the environment has them, its liquidation
engine (``liquidation_mode``, :mod:`fundgym.envs.core.liquidation`), and the sizes of its
insurance fund and of its backstop vault (Hyperliquid's HLP) as shares of open interest, which
the environment starts them at. What is not a lever (the engine, the margin tiers, the fund and
the vault) is a preset's :attr:`Preset.engine`, an :class:`Engine`: the one description of it
that a searched static set shares (:mod:`fundgym.agents.evaluate.frontier`,
:func:`fundgym.agents.evaluate.backends.static_spec`). Every value cites where it comes
from; ``[E]`` marks an estimate (a midpoint of a sourced range, or arithmetic on sourced
figures) and ``fund_estimate`` says which fund sizes are. The fund and vault sizes are those of
``shared/reference/outcomes.md`` ("Fund size relative to open interest") and ``crashes.md``
section 9.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from fundgym.envs.config import EnvConfig
from fundgym.envs.controls import ALLOCATION
from fundgym.envs.core.params import AdlPolicy, LiquidationMode
from fundgym.envs.levers import CONTROLLABLE, LEVERS

#: The parameters a static set may name: every action lever but the fund allocation, which
#: stays all-stable (see ``STATIC_ALLOC``).
STATIC_PARAMS: tuple[str, ...] = tuple(n for n in CONTROLLABLE if n not in ALLOCATION)

#: The environment's margin tier tables (``EnvConfig.margin_tiers``; ``none``: a flat MMR).
MARGIN_TIERS: tuple[str, ...] = typing.get_args(typing.get_type_hints(EnvConfig)["margin_tiers"])


@dataclass(frozen=True)
class Engine:
    """What a static set runs under besides its levers: the venue's machinery and capital.

    A lever is an action the policy holds; these are environment settings an episode starts
    with and keeps (``EnvConfig`` fields of the same names), so a static policy that names them
    runs a different exchange, not a different action. A venue preset is its levers plus its
    engine (:attr:`Preset.engine`), and a frontier point is the same pair
    (:mod:`fundgym.agents.evaluate.frontier`), so the two compare on equal terms; the top-ups
    of an exhausted fund are not part of it (no venue preset has any; a spec may still name
    them, :class:`Preset`).

    Attributes:
        liquidation_mode: Whose liquidation engine runs (``EnvConfig.liquidation_mode``).
        adl_policy: The ADL ranking and price (``EnvConfig.adl_policy``).
        margin_tiers: The maintenance-margin bracket table (``EnvConfig.margin_tiers``).
        fund_to_oi_frac: The insurance fund at the start of an episode / open interest.
        vault_to_oi_frac: The backstop vault's capital at the start / open interest (0: none).
    """

    liquidation_mode: LiquidationMode
    adl_policy: AdlPolicy
    margin_tiers: str
    fund_to_oi_frac: float
    vault_to_oi_frac: float

    def settings(self) -> dict[str, Any]:
        """The environment settings (``EnvConfig`` field -> value) this engine sets."""
        return dataclasses.asdict(self)

    def text(self) -> str:
        """``liquidation_mode=hyperliquid,adl_policy=...``: the engine as ``name=value`` items."""
        items = self.settings().items()
        return ",".join(f"{k}={v!r}" if isinstance(v, float) else f"{k}={v}" for k, v in items)

    def describe(self) -> str:
        """The engine in words, for reports."""
        tiers = "" if self.margin_tiers == "none" else f", {self.margin_tiers} margin tiers"
        vault = f", vault {self.vault_to_oi_frac:.2%} of OI" if self.vault_to_oi_frac else ""
        return (
            f"{self.liquidation_mode} liquidations, {self.adl_policy} ADL{tiers}, "
            f"fund {self.fund_to_oi_frac:.2%} of OI{vault}"
        )


#: The engine settings' names (``EnvConfig`` fields), in :class:`Engine` order.
ENGINE_KEYS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Engine))


def env_engine(env: Mapping[str, Any]) -> Engine:
    """The engine of environment settings (``EnvConfig`` keyword arguments; absent: defaults)."""
    defaults = EnvConfig()
    get = {k: env.get(k, getattr(defaults, k)) for k in ENGINE_KEYS}
    return Engine(
        liquidation_mode=cast(LiquidationMode, str(get["liquidation_mode"])),
        adl_policy=cast(AdlPolicy, str(get["adl_policy"])),
        margin_tiers=str(get["margin_tiers"]),
        fund_to_oi_frac=float(get["fund_to_oi_frac"]),
        vault_to_oi_frac=float(get["vault_to_oi_frac"]),
    )


@dataclass(frozen=True)
class Preset:
    """A venue's risk parameters, in natural units, with where they come from.

    Attributes:
        values: Parameter name -> value (names from :data:`STATIC_PARAMS`).
        margin_tiers: The environment's ``margin_tiers`` setting for this venue.
        liquidation_mode: The environment's ``liquidation_mode``: the venue's own engine.
        adl_policy: The environment's ``adl_policy``: the venue's ADL ranking (or the closest
            rule fundgym has, marked ``[E]`` in ``sources``).
        fund_to_oi_frac: The venue's insurance fund as a share of open interest: the
            environment's ``fund_to_oi_frac`` when this preset runs (0: no fund stands in front
            of ADL).
        fund_estimate: Whether ``fund_to_oi_frac`` is an estimate (``[E]``) rather than a
            sourced ratio.
        note: One line for the report: what the set is.
        sources: Where each number comes from, the fund's and the vault's sizes included.
        vault_to_oi_frac: The venue's backstop vault (HLP) as a share of open interest: the
            environment's ``vault_to_oi_frac`` when this preset runs (0: no vault).
        fund_injection_frac: What the venue injects into its exhausted fund, as a share of
            open interest: the environment's ``fund_injection_frac`` when this preset runs
            (0: no top-ups; every preset today, a spec may name one).
        fund_injection_max: Top-ups at most per episode (the environment's
            ``fund_injection_max``).
    """

    values: dict[str, float]
    margin_tiers: str
    liquidation_mode: LiquidationMode
    adl_policy: AdlPolicy
    fund_to_oi_frac: float
    fund_estimate: bool
    note: str
    sources: tuple[str, ...]
    vault_to_oi_frac: float = 0.0
    fund_injection_frac: float = 0.0
    fund_injection_max: int = 0

    @property
    def engine(self) -> Engine:
        """The venue's engine: what it runs under besides its levers."""
        return Engine(
            liquidation_mode=self.liquidation_mode,
            adl_policy=self.adl_policy,
            margin_tiers=self.margin_tiers,
            fund_to_oi_frac=self.fund_to_oi_frac,
            vault_to_oi_frac=self.vault_to_oi_frac,
        )


#: Static presets modelled on real venues' large-cap perpetual markets.
PRESETS: dict[str, Preset] = {
    "binance": Preset(
        values={
            "liquidation_fee_rate": 0.003,
            "liquidation_fee_fund_share": 1.0,
            "mmr": 0.004,
            "imr_multiple": 2.0,
            "trading_fee_fund_share": 0.0,
        },
        margin_tiers="binance_btcusdt_2021",
        liquidation_mode="binance",
        adl_policy="bitmex",
        fund_to_oi_frac=0.045,
        fund_estimate=True,
        note=(
            "Binance-like BTCUSDT: tiered MMR from 0.4% (brackets to 50% above $300M), "
            "IMR 2x MMR (125x max leverage), 0.3% liquidation clearance fee to the fund"
        ),
        sources=(
            "MMR brackets: binance.com/en/futures/trading-rules/perpetual/leverage-margin "
            "(BTCUSDT 2021: 0.4% to $50k, 0.5% to $250k, 1% to $1M, ...)",
            "clearance fee 0.3% BTCUSDT, to the insurance fund: "
            "binance.zendesk.com/hc/en-us/articles/360033525271-Liquidation",
            "liquidation mode binance: IOC orders for the whole position limited at the "
            "bankruptcy price, a bankrupt position taken over by the insurance fund, which "
            "keeps its profits and pays its losses, counterparty liquidation (ADL) when the fund "
            "cannot: binance.com/en/support/faq/360033525371 (Insurance Fund), "
            "binance.zendesk.com/hc/en-us/articles/360033525271-Liquidation",
            "trading fees do not feed the insurance fund",
            "fund 4.5% of OI [E]: the midpoint of 3-6%, the $1.23B shared BTC/ETH/BNB fund of "
            "Oct 2025 [S75] against about $20-40B of open interest [E] (outcomes.md, fund size "
            "table; crashes.md section 9, [S115]); in 2020 it was about 1% [E]",
            "ADL ranking: Binance's LeveragePnL = PnL% x margin ratio, the BitMEX family (profit "
            "x leverage), closed at the bankruptcy price; shared/reference/mechanics.md (Binance "
            "FAQ 360033525471) [E: the same ranking family, not Binance's exact quantile]",
        ),
    ),
    "dydx": Preset(
        values={
            "liquidation_fee_rate": 0.015,
            "liquidation_fee_fund_share": 1.0,
            "mmr": 0.03,
            "imr_multiple": 5.0 / 3.0,
            "trading_fee_fund_share": 0.0,
        },
        margin_tiers="none",
        liquidation_mode="dydx_v4",
        adl_policy="bitmex",
        fund_to_oi_frac=0.005,
        fund_estimate=True,
        note="dYdX-like large cap: MMR 3%, IMR 5%, 1.5% max liquidation fee, all to the fund",
        sources=(
            "dYdX v4 perpetual params (large-cap liquidity tier: initial 5%, maintenance "
            "fraction 60% -> MMR 3%): github.com/dydxprotocol/v4-chain x/perpetuals",
            "max liquidation fee 1.5%, paid to the insurance fund: x/clob liquidations_config",
            "liquidation mode dydx_v4: mainnet liquidations_config (10% of a position per "
            "block, at least $1k, at most $100k per subaccount per block, the fund losing at "
            "most $1M per subaccount per block, bankruptcy adjustment 1, spread to maintenance "
            "margin 1.5): dydxopsdao/networks dydx-mainnet-1/genesis.json lines 951-963",
            "trading fees go to stakers, not the insurance fund",
            "fund 0.5% of OI [E]: the fund was seeded with about $1M "
            "(dydx.forum/t/drc-seed-insurance-fund/1750, [S113]) against $0.1-0.3B of open "
            "interest [E]: 0.3-1%, at most 1% (outcomes.md, fund size table); $1M / $0.2B",
            "ADL: dYdX v4 offsets the whole position against counterparties iterated from a "
            "pseudo-random start (x/clob keeper/deleveraging.go), no ranking; fundgym has no "
            "random-order rule, so BitMEX ranking at the bankruptcy price stands in [E]",
        ),
    ),
    "hyperliquid": Preset(
        values={
            "liquidation_fee_rate": 0.001,
            "liquidation_fee_fund_share": 1.0,
            "mmr": 0.0125,
            "imr_multiple": 2.0,
            "trading_fee_fund_share": 0.0,
        },
        margin_tiers="none",
        liquidation_mode="hyperliquid",
        adl_policy="hyperliquid",
        fund_to_oi_frac=0.0,
        fund_estimate=False,
        vault_to_oi_frac=0.022,
        note=(
            "Hyperliquid-like BTC: 40x max leverage (IMR 2.5%), MM half of it (1.25%); market "
            "liquidations keep the trader's margin (fee at the lever's 0.1% floor), accounts "
            "below 2/3 of MM are taken over with their margin by the HLP backstop vault, then "
            "ADL (no insurance fund)"
        ),
        sources=(
            "MM = 1/2 IM at max leverage; backstop below 2/3 MM to the HLP liquidator vault, "
            "which keeps the remaining margin: hyperliquid.gitbook.io/hyperliquid-docs/trading/"
            "liquidations",
            "no clearance fee on market liquidations (Hyperliquid announcement of partial "
            "liquidations, mirrored at docs.tings.xyz/core-mechanics/liquidations): the fee "
            "lever at its action range's floor, 0.1% [E]; the margin kept on backstops is the "
            "mode's takeover, not a fee. That 0.1% goes to a fund that starts at 0, so a small "
            "fee-built fund stands in front of ADL, which Hyperliquid does not have [E] (a fund "
            "share of 0 would instead pay outside liquidators, which it does not have either)",
            "liquidation mode hyperliquid: market orders, 20% of a position over $100k first, "
            "then the whole position during a 30 s cooldown; the backstop below 2/3 MM hands "
            "the account to the vault",
            "BTC max leverage 40x: hyperliquid.gitbook.io/hyperliquid-docs/trading/margin-tiers",
            "fund 0% of OI: Hyperliquid has no insurance fund in front of ADL; its waterfall is "
            "the HLP backstop vault, then ADL: hyperliquid.gitbook.io/hyperliquid-docs/trading/"
            "liquidations, hyperliquid.gitbook.io/hyperliquid-docs/trading/auto-deleveraging",
            "vault 2.2% of OI: HLP, about $300M of TVL, against $13.8B of open interest on 10 Oct "
            "2025 (outcomes.md, fund size table); HLP also makes markets, which the vault here "
            "does not: it only takes backstop liquidations and unwinds them",
            "ADL: Hyperliquid's queue by unrealised PnL and leverage, closed at the previous "
            "oracle/mark price (hyperliquid.gitbook.io, auto-deleveraging)",
        ),
    ),
    "bitmex": Preset(
        values={
            "liquidation_fee_rate": 0.005,
            "liquidation_fee_fund_share": 1.0,
            "mmr": 0.005,
            "imr_multiple": 2.0,
            "trading_fee_fund_share": 0.0,
        },
        margin_tiers="none",
        liquidation_mode="bitmex",
        adl_policy="bitmex",
        fund_to_oi_frac=0.275,
        fund_estimate=True,
        note=(
            "BitMEX-like XBTUSD, March 2020: MMR 0.5%, IMR 1% (100x max leverage), the "
            "liquidated account's remaining maintenance margin (0.5%) to the fund"
        ),
        sources=(
            "XBTUSD base maintenance margin 0.50% until 17 Apr 2020 (then 0.45%, 0.40% from "
            "5 May 2020), base initial margin 1.00%: blog.bitmex.com/site_announcement/"
            "reduction-in-base-maintenance-margin-xbt-and-eth-series-17-april-2020-2/; the "
            "funding rate BitMEX adds to the maintenance margin and its risk-limit steps "
            "above 200 XBT are not modelled [E]",
            "liquidation: the engine takes over at the liquidation price and the remaining "
            "maintenance margin passes to the insurance fund (bitmex.com/app/liquidation, "
            "[S108]): a fee of about the MMR, all to the fund [E]; under liquidation mode "
            "bitmex the takeover itself hands the fund the whole remaining margin and the fee "
            "lever is not read",
            "liquidation mode bitmex: takeover of every liquidated position by the fund, ADL at "
            "the bankruptcy price only once the fund is depleted: "
            "bitmex.com/app/autoDeleveraging",
            "trading fees do not feed the insurance fund [E]",
            "fund 27.5% of OI [E]: the midpoint of 20-35%, 35.5k BTC (about $280M) against "
            "XBTUSD open interest of about $840M in March 2020 (outcomes.md, fund size table; "
            "crashes.md section 9, [S11])",
            "ADL: BitMEX ranking (PnL% x effective leverage) at the bankruptcy price, only once "
            "the fund is depleted (bitmex.com/app/autoDeleveraging)",
        ),
    ),
}

#: Allocation positions of every static policy: the levers' defaults (the fund all in stable).
STATIC_ALLOC: dict[str, float] = {name: LEVERS[name].default for name in ALLOCATION}

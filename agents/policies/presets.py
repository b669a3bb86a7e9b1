"""Venue presets: real venues' published risk parameters, held fixed by a static policy."""

from __future__ import annotations

from dataclasses import dataclass

from fundgym.envs.controls import ALLOCATION
from fundgym.envs.levers import CONTROLLABLE, LEVERS

#: The parameters a static set may name: every action lever but the fund allocation, which
#: stays all-stable (see ``STATIC_ALLOC``).
STATIC_PARAMS: tuple[str, ...] = tuple(n for n in CONTROLLABLE if n not in ALLOCATION)


@dataclass(frozen=True)
class Preset:
    """A venue's risk parameters, in natural units, with where they come from.

    Attributes:
        values: Parameter name -> value (names from :data:`STATIC_PARAMS`).
        margin_tiers: The environment's ``margin_tiers`` setting for this venue.
        note: One line for the report: what the set is.
        sources: Where each number comes from.
    """

    values: dict[str, float]
    margin_tiers: str
    note: str
    sources: tuple[str, ...]


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
        note=(
            "Binance-like BTCUSDT: tiered MMR from 0.4% (brackets to 50% above $300M), "
            "IMR 2x MMR (125x max leverage), 0.3% liquidation clearance fee to the fund"
        ),
        sources=(
            "MMR brackets: binance.com/en/futures/trading-rules/perpetual/leverage-margin "
            "(BTCUSDT 2021: 0.4% to $50k, 0.5% to $250k, 1% to $1M, ...)",
            "clearance fee 0.3% BTCUSDT, to the insurance fund: "
            "binance.zendesk.com/hc/en-us/articles/360033525271-Liquidation",
            "trading fees do not feed the insurance fund",
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
        note="dYdX-like large cap: MMR 3%, IMR 5%, 1.5% max liquidation fee, all to the fund",
        sources=(
            "dYdX v4 perpetual params (large-cap liquidity tier: initial 5%, maintenance "
            "fraction 60% -> MMR 3%): github.com/dydxprotocol/v4-chain x/perpetuals",
            "max liquidation fee 1.5%, paid to the insurance fund: x/clob liquidations_config",
            "trading fees go to stakers, not the insurance fund",
        ),
    ),
    "hyperliquid": Preset(
        values={
            "liquidation_fee_rate": 0.008,
            "liquidation_fee_fund_share": 1.0,
            "mmr": 0.0125,
            "imr_multiple": 2.0,
            "trading_fee_fund_share": 0.0,
        },
        margin_tiers="none",
        note=(
            "Hyperliquid-like BTC: 40x max leverage (IMR 2.5%), MM half of it (1.25%); the "
            "0.8% fee stands for the margin HLP keeps on backstop liquidations (2/3 of MM)"
        ),
        sources=(
            "MM = 1/2 IM at max leverage; backstop below 2/3 MM to the HLP liquidator vault, "
            "which keeps the remaining margin: hyperliquid.gitbook.io/hyperliquid-docs/trading/"
            "liquidations",
            "BTC max leverage 40x: hyperliquid.gitbook.io/hyperliquid-docs/trading/margin-tiers",
        ),
    ),
}

#: Allocation positions of every static policy: the levers' defaults (the fund all in stable).
STATIC_ALLOC: dict[str, float] = {name: LEVERS[name].default for name in ALLOCATION}

"""The reward: solvency against capital efficiency, every term in basis points of open interest.

Per decision, for each exchange (all USD amounts divided by the episode's initial open
interest and multiplied by 1e4, so a reward of -1 is one basis point of open interest):

* ``revenue``: trading fees (the exchange's and the fund's share), the fund's liquidation-fee
  income, and what the fund's buckets earned (yield, hedge and volatile marks, minus costs);
* ``capital_cost``: the fund's value x ``cost_of_capital_apr`` x the decision's length: idle
  capital is not free;
* ``solvency``: losses the fund could not cover (socialised and unrecovered) plus
  ``adl_weight`` x the notional deleveraged: what users of the exchange lose;
* ``margin_cost``: the capital traders lock as maintenance margin x ``cost_of_capital_apr`` x
  the decision's length: high margins cost users, which is why venues compete on them;
* ``lost_demand``: the trading-fee revenue forgone because margins and fees drive demand away
  (``1 - demand multiplier`` of the volume at reference parameters);
* ``change``: the sum of parameter moves in action units: risk committees dislike churn;
* ``fund_pnl``: what the fund's buckets earned (yield, hedge and volatile marks, minus costs),
  the part of ``revenue`` that the allocation moves. A stable-only fund earns nothing, so this
  is the allocation's PnL against holding stable assets. Its weight is *extra* (default 0):
  the fund's PnL is already in ``revenue`` at ``w_revenue``, a fund of 2% of open interest can
  lose at most about 200 bps, and beside ``w_solvency`` x user loss that signal is too small
  for PPO to learn the allocation from (docs/benchmarks.md); ``w_fund_pnl`` = 19 counts a
  dollar of the fund like a dollar of users' loss.
* ``fund_shortfall``: the bad debt the fund paid (liquidations filled worse than bankruptcy):
  the fund's outgo beside the liquidation-fee income ``revenue`` counts. Weight default 0
  (the reward until 2026-12-03 counted the fund's income and not its payouts, so a controller
  that drained the fund by lowering margins saw only the capital it saved); at 1 the fund's
  net (fees in, shortfalls out) is in the reward as the exchange's money, dollar for dollar.

``reward = w_revenue revenue - w_capital capital_cost - w_solvency solvency - w_margin
margin_cost - w_demand lost_demand - w_change change + w_fund_pnl fund_pnl - w_fund_shortfall
fund_shortfall``. ``cost`` (the
Safety-Gymnasium convention, ``info["cost"]``) is the unweighted ``solvency`` term alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from fundgym.envs.schema import spec

FloatArray = np.ndarray[Any, np.dtype[np.float64]]

COMPONENTS = (
    "revenue",
    "capital_cost",
    "solvency",
    "margin_cost",
    "lost_demand",
    "change",
    "fund_pnl",
    "fund_shortfall",
)


@dataclass(frozen=True)
class RewardWeights:
    """Weights of the reward terms and the rates that price capital."""

    revenue: float = spec(1.0, ge=0.0, le=1e6, doc="weight of revenue")
    capital_cost: float = spec(1.0, ge=0.0, le=1e6, doc="weight of the fund's capital cost")
    solvency: float = spec(20.0, ge=0.0, le=1e6, doc="weight of losses users bear")
    margin_cost: float = spec(1.0, ge=0.0, le=1e6, doc="weight of traders' locked margin")
    lost_demand: float = spec(1.0, ge=0.0, le=1e6, doc="weight of revenue lost to demand")
    change: float = spec(0.05, ge=0.0, le=1e6, doc="weight of parameter churn (per unit)")
    adl_weight: float = spec(0.05, ge=0.0, le=1.0, doc="loss-equivalent of 1 USD deleveraged")
    cost_of_capital_apr: float = spec(0.10, ge=0.0, le=1.0, doc="price of locked capital")
    fund_pnl: float = spec(
        0.0, ge=0.0, le=1e6, doc="extra weight of the fund's own PnL (already in revenue)"
    )
    fund_shortfall: float = spec(
        0.0, ge=0.0, le=1e6, doc="weight of the bad debt the fund paid (its outgo)"
    )


@dataclass
class DecisionTotals:
    """What one decision interval produced, per exchange (``(n_envs,)`` USD unless noted)."""

    trading_fees_usd: FloatArray
    fund_liquidation_fees_usd: FloatArray
    fund_external_pnl_usd: FloatArray
    fund_value_usd: FloatArray
    socialized_loss_usd: FloatArray
    unrecovered_usd: FloatArray
    adl_volume_usd: FloatArray
    fund_shortfall_usd: FloatArray  # bad debt the fund paid
    margin_locked_usd: FloatArray
    lost_fee_revenue_usd: FloatArray
    change: FloatArray  # action units
    years: float


def reward_components(
    totals: DecisionTotals, open_interest_usd: FloatArray, weights: RewardWeights
) -> dict[str, FloatArray]:
    """Every term, unweighted, in basis points of ``open_interest_usd`` (the episode's scale)."""
    scale = 1e4 / np.maximum(open_interest_usd, 1.0)
    coc = weights.cost_of_capital_apr * totals.years
    return {
        "revenue": (
            totals.trading_fees_usd
            + totals.fund_liquidation_fees_usd
            + totals.fund_external_pnl_usd
        )
        * scale,
        "capital_cost": totals.fund_value_usd * coc * scale,
        "solvency": (
            totals.socialized_loss_usd
            + totals.unrecovered_usd
            + weights.adl_weight * totals.adl_volume_usd
        )
        * scale,
        "margin_cost": totals.margin_locked_usd * coc * scale,
        "lost_demand": totals.lost_fee_revenue_usd * scale,
        "change": np.asarray(totals.change, dtype=np.float64),
        "fund_pnl": totals.fund_external_pnl_usd * scale,
        "fund_shortfall": totals.fund_shortfall_usd * scale,
    }


def combine(components: dict[str, FloatArray], weights: RewardWeights) -> FloatArray:
    """The scalar reward per exchange from the unweighted components."""
    out = np.asarray(
        weights.revenue * components["revenue"]
        - weights.capital_cost * components["capital_cost"]
        - weights.solvency * components["solvency"]
        - weights.margin_cost * components["margin_cost"]
        - weights.lost_demand * components["lost_demand"]
        - weights.change * components["change"],
        dtype=np.float64,
    )
    if weights.fund_pnl:  # added only when weighted: at 0 the reward stays the same to the bit
        out = out + weights.fund_pnl * components["fund_pnl"]
    if weights.fund_shortfall:  # likewise
        out = out - weights.fund_shortfall * components["fund_shortfall"]
    return out

"""What the liquidation fee's split costs on the shipped crashes (docs/liquidation.md's table).

Runs each crash whole under one liquidation mode (default ``partial``), fee 1.5%, fund 2% of
open interest, 8 exchanges of 1,024 accounts, seed 0, at the fund's shares 1.0, 0.5 and 0.0,
and prints, per run, liquidated notional / OI, the share of the engine's flow outside
liquidators took, bad debt, the fund's payments and fee income and ADL in bps of starting OI,
and the share of liquidation orders filled past bankruptcy. Deterministic.

Usage: ``python benchmarks/fee_split_price.py [--mode MODE]``.
"""

from __future__ import annotations

import argparse

from fundgym.envs.core.events import StepEvents
from fundgym.envs.core.params import RiskParams
from fundgym.envs.scenarios import load_scenario
from fundgym.envs.simulator import ExchangeSimulator

CRASHES = ("black_thursday_2020", "may_19_2021", "oct_10_2025")


def main(mode: str = "partial") -> None:
    """Print one line per crash and fund share."""
    for name in CRASHES:
        sc = load_scenario(name)
        for share in (1.0, 0.5, 0.0):
            risk = RiskParams(
                liquidation_fee_rate=0.015,
                liquidation_fee_fund_share=share,
                liquidation_mode=mode,  # type: ignore[arg-type]
            )
            sim = ExchangeSimulator(
                sc, risk, n_envs=8, n_accounts=1024, seed=0, fund_to_oi_frac=0.02, record=False
            )
            events = sim.advance(int(sim.market.n_ticks[0]))
            sums = {f: float(events.event(f).sum()) for f in StepEvents.FIELDS}

            def total(field: str, sums: dict[str, float] = sums) -> float:
                return sums[field]

            oi0 = float(sim.initial_open_interest_usd.sum())
            flow = max(total("liquidation_sell_usd") + total("liquidation_buy_usd"), 1.0)
            bps = 1e4 / oi0
            print(
                f"{name:>20s} {mode:>8s} share {share:.1f}: "
                f"liquidated/OI {total('liquidation_volume_usd') / oi0:.3f}  "
                f"taken by liquidators {total('liquidator_absorbed_usd') / flow:.3f}  "
                f"bad debt {total('bad_debt_usd') * bps:7.2f} bps  "
                f"fund paid {total('shortfall_usd') * bps:7.2f} bps  "
                f"fund fee income {total('fund_fee_income_usd') * bps:7.2f} bps  "
                f"ADL {total('adl_volume_usd') * bps:7.2f} bps  "
                f"past bankruptcy "
                f"{total('n_liquidations_below_bankruptcy') / max(total('n_liquidations'), 1):.3f}",
                flush=True,
            )


if __name__ == "__main__":
    from fundgym.envs.core.params import LIQUIDATION_MODES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--mode",
        default="partial",
        choices=LIQUIDATION_MODES,
        help="liquidation mode every run uses (default partial)",
    )
    main(parser.parse_args().mode)

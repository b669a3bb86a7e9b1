"""``fundgym demo``: a crash through the exchange core with default parameters, summarised.

Until the market and scenario library land, the crash is a scripted path in the shape of
10 October 2025 (calibration notes, section 5 and 7): an hour of ordinary noise, a cascade of
about -12% in 12 one-minute ticks while book depth collapses to 5% of normal, and a partial
recovery. The book is a synthetic population (lognormal leverage, median 10x, capped at
1 / IMR). Both fallbacks run on the same path and seed, side by side.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

import numpy as np

from envs.core.fund_record import FundRecord
from envs.core.impact import LinearImpact
from envs.core.params import RiskParams
from envs.core.state import ledger_error
from envs.core.step import StepEvents, core_step
from envs.core.synthetic import synthetic_book
from envs.core.trading import execute_trades

FloatArray = np.ndarray[Any, np.dtype[np.float64]]


@dataclass(frozen=True)
class CrashPath:
    """Mark and depth per one-minute tick."""

    mark: FloatArray
    depth_usd_per_pct: FloatArray


def scripted_crash(
    rng: np.random.Generator,
    *,
    price: float = 100_000.0,
    drawdown: float = 0.12,
    crash_minutes: int = 12,
    normal_depth_usd_per_pct: float = 2e7,
    depth_floor_frac: float = 0.05,
) -> CrashPath:
    """Calm hour, crash leg with collapsing depth, half recovery over the next hour."""
    calm = price * np.exp(np.cumsum(rng.normal(0.0, 0.0005, 60)))
    start = calm[-1]
    leg_returns = np.full(crash_minutes, np.log(1.0 - drawdown) / crash_minutes)
    leg_returns += rng.normal(0.0, 0.004, crash_minutes)
    leg_returns -= leg_returns.mean() - np.log(1.0 - drawdown) / crash_minutes
    leg = start * np.exp(np.cumsum(leg_returns))
    trough = leg[-1]
    rebound = trough + (start - trough) * 0.5 * (1.0 - np.exp(-np.arange(1, 61) / 15.0))
    mark = np.concatenate([calm, leg, rebound])
    depth = np.full(mark.shape, normal_depth_usd_per_pct)
    collapse = np.linspace(1.0, depth_floor_frac, crash_minutes)
    depth[60 : 60 + crash_minutes] *= collapse
    depth[60 + crash_minutes :] *= depth_floor_frac + (1 - depth_floor_frac) * (
        1.0 - np.exp(-np.arange(1, 61) / 20.0)
    )
    return CrashPath(mark=mark, depth_usd_per_pct=depth)


def run_crash(
    path: CrashPath,
    params: RiskParams,
    *,
    seed: int,
    n_accounts: int,
    fund_usd: float,
    trade_share: float = 0.01,
) -> tuple[dict[str, FloatArray], float, float]:
    """Simulate one exchange along ``path``; return flow totals, max ledger error, open interest.

    Each tick a ``trade_share`` of accounts trade up to 10% of their position at the mark
    (paying taker fees, part of which flow to the fund), then the margin engine runs.
    """
    rng = np.random.default_rng(seed)
    imr = float(np.max(params.imr))
    state = synthetic_book(
        rng, 1, n_accounts, float(path.mark[0]), max_leverage=1.0 / imr, fund_usd=fund_usd
    )
    open_interest = float(np.abs(state.size).sum() * path.mark[0] / 2.0)
    record = FundRecord(state.fund_usd)
    worst = 0.0
    for t in range(path.mark.size):
        mark = path.mark[t : t + 1]
        events = StepEvents.zeros(1)
        traders = rng.random(state.size.shape) < trade_share
        order = np.where(traders, state.size * rng.uniform(-0.1, 0.1, state.size.shape), 0.0)
        execute_trades(state, params, order, mark, mark, events)
        liq = core_step(state, params, mark, LinearImpact(path.depth_usd_per_pct[t]))
        for name, value in liq.as_dict().items():
            if name not in ("trading_fees_usd", "fund_trading_fee_income_usd"):
                setattr(events, name, value)
        record.append(events, state.fund_usd)
        worst = max(worst, float(np.abs(ledger_error(state, mark)).max()))
    return record.totals(), worst, open_interest


ROWS: tuple[tuple[str, str], ...] = (
    ("liquidation orders", "n_liquidations"),
    ("liquidation volume", "liquidation_volume_usd"),
    ("liquidation fees charged", "liquidation_fees_usd"),
    ("  to the insurance fund", "fund_fee_income_usd"),
    ("  to liquidators", "liquidator_rewards_usd"),
    ("trading fees to the fund", "fund_trading_fee_income_usd"),
    ("bad debt (fills past bankruptcy)", "bad_debt_usd"),
    ("  shortfall paid by the fund", "shortfall_usd"),
    ("  deleveraged notional (ADL)", "adl_volume_usd"),
    ("  ADL haircut to counterparties", "adl_haircut_usd"),
    ("  socialised loss", "socialized_loss_usd"),
    ("  unrecovered (exchange)", "unrecovered_usd"),
    ("fund at start", "fund_start_usd"),
    ("fund minimum", "fund_min_usd"),
    ("fund at end", "fund_end_usd"),
)


def format_summary(results: dict[str, dict[str, FloatArray]]) -> str:
    """A fixed-width table: one row per flow, one column per fallback."""
    names = list(results)
    lines = [f"{'':36s}" + "".join(f"{n:>22s}" for n in names)]
    for label, key in ROWS:
        cells = []
        for n in names:
            v = float(results[n][key][0])
            money = "$" + f"{v:,.0f}"
            cells.append(f"{v:>22,.0f}" if key == "n_liquidations" else f"{money:>22s}")
        lines.append(f"{label:36s}" + "".join(cells))
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``fundgym demo``."""
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--accounts", type=int, default=20_000, help="trader accounts (default 20,000)"
    )
    parser.add_argument(
        "--drawdown",
        type=float,
        default=0.12,
        help="crash depth as a fraction, in (0, 0.95] (default 0.12, as BTC on 10 Oct 2025)",
    )
    parser.add_argument(
        "--fund-usd",
        type=float,
        default=100_000.0,
        help="initial insurance fund in USD (default 100,000: small enough that the crash "
        "exhausts it and the fallbacks act)",
    )


def main(args: argparse.Namespace) -> int:
    """Run the crash under both fallbacks and print the summary."""
    if not 0.0 < args.drawdown <= 0.95:
        raise SystemExit(f"--drawdown must lie in (0, 0.95], got {args.drawdown}")
    if args.accounts < 1:
        raise SystemExit(f"--accounts must be >= 1, got {args.accounts}")
    if not np.isfinite(args.fund_usd) or args.fund_usd < 0:
        raise SystemExit(f"--fund-usd must be finite and >= 0, got {args.fund_usd}")
    path = scripted_crash(np.random.default_rng(args.seed), drawdown=args.drawdown)
    results: dict[str, dict[str, FloatArray]] = {}
    worst = 0.0
    oi = 0.0
    for fallback in ("adl", "socialize"):
        params = RiskParams(fallback=fallback)
        totals, err, oi = run_crash(
            path, params, seed=args.seed, n_accounts=args.accounts, fund_usd=args.fund_usd
        )
        results[f"fallback={fallback}"] = totals
        worst = max(worst, err)
    p = RiskParams()
    peak, trough = float(path.mark[:60].max()), float(path.mark.min())
    print(
        f"fundgym demo: scripted crash {peak:,.0f} -> {trough:,.0f} "
        f"({trough / peak - 1:+.1%}) over {path.mark.size} one-minute ticks, "
        f"depth down to {path.depth_usd_per_pct.min() / path.depth_usd_per_pct.max():.0%}"
    )
    print(
        f"{args.accounts:,} accounts, open interest ${oi:,.0f}, "
        f"fund ${args.fund_usd:,.0f} ({args.fund_usd / oi:.2%} of OI), seed {args.seed}\n"
        f"defaults: MMR {p.mmr:.1%}, IMR {p.imr:.1%}, liquidation fee {p.liquidation_fee_rate:.2%} "
        f"(fund share {p.liquidation_fee_fund_share:.0%}), "
        f"max {p.max_liquidation_fraction:.0%} of a position per tick\n"
    )
    print(format_summary(results))
    print(
        f"\nledger: largest imbalance over every tick ${worst:.2e} "
        f"({worst / oi:.1e} of open interest): the books balance"
    )
    return 0

"""``fundgym markets``: run a multi-market scenario under each fund mode and collateral price.

Compares how an exchange listing several markets carries a crash: one insurance fund shared by
every market, or one per market (or per group), and collateral assets marked on the venue's own
book, an external index or their redemption value.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import math
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from fundgym.agents.cli.guards import (
    OutputKind,
    UsageError,
    at_least,
    check_output,
    check_seed,
    load_scenario_checked,
)
from fundgym.agents.evaluate.markets_policy import market_risk
from fundgym.agents.evaluate.markets_runs import (
    Trace,
    plot_policies,
    score_episodes,
    seed_statistics,
    seed_summary,
    summary_table,
)
from fundgym.agents.evaluate.plots import plot_markets_run
from fundgym.agents.outputs import directory_in_place, output_lock, progress_bar
from fundgym.agents.policies.base import SpecError
from fundgym.agents.policies.markets_run import (
    MODELS,
    MarketsRun,
    load_markets_runs,
    markets_env,
)
from fundgym.agents.policies.runs import BEST
from fundgym.envs.core.params import RiskParams
from fundgym.envs.levers import LEVERS
from fundgym.envs.market.sampler import MarketsSamplerSettings
from fundgym.envs.markets_simulator import (
    COLLATERAL_SOURCES,
    FUND_CAP_PERIODS,
    FUND_MODES,
    MarketsResult,
    MarketsSimulator,
)
from fundgym.envs.scenarios import Scenario
from fundgym.envs.schema import SchemaError, build

FloatArray = np.ndarray[Any, np.dtype[np.float64]]
FILES = (
    "markets.csv",
    "per_market.csv",
    "markets.md",
    "markets.png",
    "config.yaml",
    "command.txt",
)


#: What ``--run`` writes instead of the configurations' files.
RUN_FILES = ("policies.csv", "markets.md", "policies.png", "config.yaml", "command.txt")
#: The configuration options ``--run`` does not take: the run's own settings hold.
RUN_FIXED = (
    "fund_mode",
    "fund_groups",
    "collateral_price",
    "policy",
    "fund_cap_usd",
    "market_fund_cap_frac",
    "fund_cap_period",
    "fund_allocation",
    "fund_asset",
    "segment_transfer_cap_usd",
    "collateral_haircut",
    "market_mmr_mult",
    "accounts",
    "liquidator_capacity_mult",
    "fund_frac",
)


def _is_markets_dir(path: Path) -> bool:
    table = (path / "markets.csv").is_file() or (path / "policies.csv").is_file()
    return table and (path / "config.yaml").is_file()


OUTPUT = OutputKind("markets comparison directory", True, _is_markets_dir, ", ".join(FILES))

DESCRIPTION = """\
Run a multi-market scenario (one with a markets: section, such as alt_contagion,
oct_10_2025_multi or luna_2022_multi) through fundgym.envs.markets_simulator: every market
priced on its own path and book, cross-margined accounts across markets, collateral assets
marked at the venue's chosen price, and the margin engine across markets (partial
liquidation, default levers). Each configuration, a fund mode times a collateral price, runs
the same --episodes seeds, so the rows differ only by the configuration.

Per configuration, the means over episodes of: user loss (socialised + unrecovered +
deleveraged notional), the loss beyond the fund, the shortfall the fund paid, deleveraged
notional, liquidations as a share of starting open interest, the share of liquidations that
filled below bankruptcy, the collateral-depeg loss of seized assets, the fund's mean value
(the capital it locks) and each pot's largest drawdown. Per market: what the fund paid toward
it, the notional deleveraged and the loss socialised in it, and the drawdown of the pot that
backs it: under a shared fund, an alt's bad debt is paid
out of what backs BTC and ETH (contagion); segmented, it stays in the alt's pot and what the
pot cannot pay goes to ADL of the alt's own winners. With a backstop vault (a preset that runs
one, e.g. static:hyperliquid, whose HLP takes accounts below 2/3 of their requirement over with
every leg): its capital, its PnL at the end, the accounts it took over and its own inventory
deleveraged once it lost more than its loss limit (static:...,vault_adl_loss_frac=F; Hyperliquid's
own is 2% of its capital).

--out DIR (optional) receives markets.csv (one row per configuration and episode),
per_market.csv (one row per configuration, episode and market), markets.md (the tables),
markets.png (each configuration's insurance and users' loss over the episode, beside the
markets' indexes), config.yaml (the resolved arguments and scenario name) and command.txt,
built under a temporary name and renamed into place.

--run DIR scores a policy trained on the multi-market env (fundgym train --config
configs/train/ppo_markets.yaml) instead: each episode is played by the run's model and by the
levers' defaults on the same seed, under the run's own settings, and the table gives each
policy's return, solvency cost, users' loss, capital locked and fund drawdown; --out then
receives policies.csv (one row per policy and episode), markets.md, policies.png (each
policy's insurance and users' loss over the episode, means over the episodes, beside the
markets' indexes), config.yaml and command.txt. DIR may be a multi-seed directory
(fundgym train --seeds S1,S2,...): every seed's model plays the same episodes, and the table
adds the interquartile mean across seeds of the
users' loss and the capital locked with 95% bootstrap intervals, the probability of
improvement over the defaults, the probability that a seed's loss exceeds the defaults' on the
same episode and whether the worst seed is no worse (seeds.csv, as fundgym evaluate's).

Exit codes: 0 done, 2 bad arguments (the message names the option, value and what is allowed).
"""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``fundgym markets``."""
    p = sub.add_parser(
        "markets",
        help="run a multi-market scenario under shared and segmented funds and collateral "
        "prices; per-market contagion",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--scenario",
        default=None,
        metavar="NAME_OR_PATH",
        help="scenario by library name or YAML path (default alt_contagion; with --run, the "
        "scenario the run trained on)",
    )
    p.add_argument(
        "--run",
        default=None,
        metavar="DIR",
        help="score a run fundgym train made from a markets: config (its best/ model, else "
        "final/; --model final for final/) beside the levers' defaults, each episode played "
        "by both on the same seed, under the run's own settings (the configuration options "
        "below do not apply); "
        "writes policies.csv instead of markets.csv",
    )
    p.add_argument(
        "--model",
        choices=MODELS,
        default=None,
        help="with --run: which model of each run plays, best (the held-out evaluation's "
        "best/, else final/; the default) or final (final/, the model at the last step)",
    )
    p.add_argument(
        "--sampled",
        action="store_true",
        help="with --run: play each episode on a day drawn around the scenario's markets from "
        "its seed (the run's markets.sampler settings, else the sampler's defaults: "
        "crash_prob 0.7, idio_prob 0.5), the same day for the model and the defaults, "
        "instead of the scenario as written",
    )
    p.add_argument(
        "--sampler",
        metavar="KEY=VALUE[,...]",
        help="with --run: draw the days with these sampler settings instead of the run's "
        "(crash_prob, idio_prob; each in [0, 1], the others at their defaults), so that runs "
        "trained on different distributions are scored on the same days; implies --sampled",
    )
    p.add_argument(
        "--fund-mode",
        default="shared,segmented",
        metavar="MODES",
        help=f"comma-separated fund modes, of {', '.join(FUND_MODES)} (default both)",
    )
    p.add_argument(
        "--fund-groups",
        default=None,
        metavar="G,G,...",
        help="segmented: each market's segment index, in market order, using every index "
        "0 .. G-1 (default: one segment per market)",
    )
    p.add_argument(
        "--collateral-price",
        default="book",
        metavar="SOURCES",
        help=f"comma-separated prices collateral assets are marked at, of "
        f"{', '.join(COLLATERAL_SOURCES)} (default book; ignored without collateral assets)",
    )
    p.add_argument(
        "--policy",
        default=None,
        metavar="SPEC",
        help="the levers, ADL rule, margin tiers and fund size: a static spec as in "
        "`fundgym evaluate` (static:PRESET, static:PRESET,name=value,..., static:name=value,...); "
        "the partial engine, or binance's (add ,liquidation_mode=partial to another venue's "
        "preset, and ,vault_to_oi_frac=0 to one with a vault). Default: the levers' defaults, "
        "bitmex ADL, --fund-frac",
    )
    p.add_argument(
        "--fund-cap-usd",
        default=None,
        metavar="C,C,...",
        help="the most the fund pays toward each market's shortfalls per tick (or per episode: "
        "--fund-cap-period), USD, in market order, each >= 0 or inf (Drift's tier caps: 1e8, "
        "1e6, 1e5, 0; default: no cap)",
    )
    p.add_argument(
        "--market-fund-cap-frac",
        default=None,
        metavar="F,F,...",
        help="the same caps as shares of the exchange's starting insurance (every pot), "
        "in market order, each >= 0 or inf (0: the fund never pays the market; default: none); "
        "with --fund-cap-usd the smaller cap holds",
    )
    p.add_argument(
        "--fund-cap-period",
        default="tick",
        choices=FUND_CAP_PERIODS,
        help="what --fund-cap-usd holds over: each tick anew (default), or the episode, what the "
        "fund paid toward a market so far counting against its cap (Drift's quote_max_insurance "
        "less quote_settled_insurance)",
    )
    p.add_argument(
        "--fund-allocation",
        default=None,
        metavar="S,Y,V,H",
        help="the shared fund's weights at the start: stable, yield, volatile (units of the "
        "--fund-asset market's asset) and hedge (puts on it), each >= 0, summing to 1 "
        "(default 1,0,0,0: all stable)",
    )
    p.add_argument(
        "--fund-asset",
        default=None,
        metavar="MARKET[:W,...]",
        help="the listed market whose asset the shared fund's volatile bucket holds and whose "
        "puts its hedge buys (default: the scenario's first market); or a basket, MARKET:W "
        "pairs with weights > 0 summing to 1 (BTC:0.6,ETH:0.4): units of each and puts on each",
    )
    p.add_argument(
        "--segment-transfer-cap-usd",
        type=float,
        default=0.0,
        metavar="USD",
        help="segmented funds: the most the segments may lend one another per tick toward a "
        "market's shortfall its own segment cannot pay, >= 0 (default 0: transfers "
        "forbidden; inf: the segments pool for shortfalls)",
    )
    p.add_argument(
        "--collateral-haircut",
        default=None,
        metavar="H,H,...",
        help="each collateral asset's haircut, in the scenario's asset order, each in [0, 1) "
        "(default: the scenario's haircut_frac)",
    )
    p.add_argument(
        "--market-mmr-mult",
        default=None,
        metavar="K,K,...",
        help="each market's maintenance (and initial) margin as a multiple of the exchange's, "
        "in market order, each > 0 (default all 1): a thin alt asks more",
    )
    p.add_argument(
        "--episodes", type=int, default=5, metavar="N", help="episodes per configuration (5)"
    )
    p.add_argument(
        "--seed",
        type=int,
        default=None,
        metavar="S",
        help="episode i is seeded S + i (default: the scenario's seed)",
    )
    p.add_argument("--accounts", type=int, default=2_000, metavar="N", help="account slots (2,000)")
    p.add_argument(
        "--liquidator-capacity-mult",
        type=float,
        default=None,
        metavar="K",
        help="outside liquidators' capacity in each market, a multiple of the competitive "
        "market's, in [0, 100] (default 1, as in one market); they come only where the policy "
        "pays them a share of the liquidation fee",
    )
    p.add_argument(
        "--fund-frac",
        type=float,
        default=0.02,
        metavar="F",
        help="the fund at the start as a share of open interest, in [0, 10] (default 0.02); "
        "segmented, each segment gets its markets' share of it",
    )
    p.add_argument("--out", default=None, metavar="DIR", help="write the tables and CSVs here")
    p.add_argument("--force", action="store_true", help=OUTPUT.force_help())
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=main, run_fixed={k: p.get_default(k) for k in RUN_FIXED})


def _choices(option: str, text: str, allowed: tuple[str, ...]) -> list[str]:
    items = [x.strip() for x in text.split(",") if x.strip()]
    if not items:
        raise UsageError(f"{option} must list at least one of {list(allowed)}, got {text!r}")
    for x in items:
        if x not in allowed:
            raise UsageError(f"{option}: {x!r} is not one of {list(allowed)}")
    return list(dict.fromkeys(items))


def _groups(text: str | None, scenario: Scenario) -> list[int] | None:
    if text is None:
        return None
    try:
        groups = [int(x) for x in text.split(",")]
    except ValueError:
        raise UsageError(f"--fund-groups must be comma-separated integers, got {text!r}") from None
    n = scenario.n_markets
    if len(groups) != n or min(groups) < 0 or sorted(set(groups)) != list(range(max(groups) + 1)):
        raise UsageError(
            f"--fund-groups must give one segment index per market ({n}: "
            f"{', '.join(scenario.market_names)}), using every index 0 .. G-1, got {text!r}"
        )
    return groups


def _numbers(option: str, text: str | None, names: tuple[str, ...], allowed: str) -> list[float]:
    """One number per name from a comma-separated ``text`` (range checked by the caller)."""
    assert text is not None
    try:
        values = [float(x) for x in text.split(",")]
    except ValueError:
        raise UsageError(f"{option} must be comma-separated numbers, got {text!r}") from None
    if len(values) != len(names) or any(v != v for v in values):
        raise UsageError(
            f"{option} must give one number {allowed} for each of {len(names)}: "
            f"{', '.join(names)}; got {text!r}"
        )
    return values


def _caps(option: str, what: str, text: str | None, scenario: Scenario) -> list[float] | None:
    """A per-market cap option: one number >= 0 (or ``inf``) per market, or ``None``."""
    if text is None:
        return None
    caps = _numbers(option, text, scenario.market_names, ">= 0 (or inf)")
    if min(caps) < 0.0:
        raise UsageError(f"{option}: each {what} must be >= 0 (or inf), got {text!r}")
    return caps


def _allocation(text: str | None) -> list[float] | None:
    """``--fund-allocation``: four shares >= 0 summing to 1, or ``None``."""
    if text is None:
        return None
    try:
        w = [float(x) for x in text.split(",")]
    except ValueError:
        w = []
    if len(w) != 4 or not all(math.isfinite(x) and x >= 0.0 for x in w) or abs(sum(w) - 1) > 1e-8:
        raise UsageError(
            "--fund-allocation must be four shares S,Y,V,H (stable, yield, volatile, hedge), "
            f"each >= 0, summing to 1, got {text!r}"
        )
    return w


def _haircuts(text: str | None, scenario: Scenario) -> list[float] | None:
    if text is None:
        return None
    if not scenario.collateral:
        raise UsageError(
            f"--collateral-haircut: scenario {scenario.name!r} has no collateral assets"
        )
    cuts = _numbers("--collateral-haircut", text, scenario.collateral_names, "in [0, 1)")
    if not all(0.0 <= h < 1.0 for h in cuts):
        raise UsageError(f"--collateral-haircut: each haircut must lie in [0, 1), got {text!r}")
    return cuts


def _mults(text: str | None, scenario: Scenario) -> list[float] | None:
    if text is None:
        return None
    try:
        mults = [float(x) for x in text.split(",")]
    except ValueError:
        raise UsageError(
            f"--market-mmr-mult must be comma-separated numbers, got {text!r}"
        ) from None
    n = scenario.n_markets
    if len(mults) != n or not all(math.isfinite(k) and k > 0.0 for k in mults):
        raise UsageError(
            f"--market-mmr-mult must give one finite multiple > 0 per market ({n}: "
            f"{', '.join(scenario.market_names)}), got {text!r}"
        )
    return mults


def main(args: argparse.Namespace) -> int:
    """Check everything, then run each configuration and print (and write) the tables."""
    at_least("--episodes", args.episodes, 1)
    at_least("--accounts", args.accounts, 1)
    check_seed("--seed", args.seed)
    if args.run is not None:
        return _main_run(args)
    if args.sampled or args.sampler is not None:
        option = "--sampled" if args.sampled else "--sampler"
        raise UsageError(
            f"{option} plays a trained run's episodes on drawn days: give --run DIR (without "
            "it, fundgym markets runs the scenario as written)"
        )
    if args.model is not None:
        raise UsageError(
            f"--model {args.model}: chooses a trained run's model; give --run DIR (without it, "
            "fundgym markets runs the levers' defaults and the configurations given)"
        )
    if args.scenario is None:
        args.scenario = "alt_contagion"
    if not (math.isfinite(args.fund_frac) and 0.0 <= args.fund_frac <= 10.0):
        raise UsageError(f"--fund-frac must lie in [0, 10], got {args.fund_frac}")
    modes = _choices("--fund-mode", args.fund_mode, FUND_MODES)
    sources = _choices("--collateral-price", args.collateral_price, COLLATERAL_SOURCES)
    scenario = load_scenario_checked(args.scenario)
    groups = _groups(args.fund_groups, scenario)
    mults = _mults(args.market_mmr_mult, scenario)
    caps = _caps("--fund-cap-usd", "cap", args.fund_cap_usd, scenario)
    cap_fracs = _caps("--market-fund-cap-frac", "share", args.market_fund_cap_frac, scenario)
    allocation = _allocation(args.fund_allocation)
    asset = _fund_asset(args.fund_asset, scenario)
    if allocation is not None and "shared" not in modes:
        raise UsageError("--fund-allocation applies to --fund-mode shared (segments are cash)")
    transfer = args.segment_transfer_cap_usd
    if math.isnan(transfer) or transfer < 0.0:
        raise UsageError(
            f"--segment-transfer-cap-usd must be >= 0 USD per tick (or inf), got {transfer}"
        )
    haircuts = _haircuts(args.collateral_haircut, scenario)
    spec = market_risk(args.policy)
    risk, policy_note = spec.risk, spec.note
    risk = _with_liquidators(risk, args.liquidator_capacity_mult)
    fund_frac = args.fund_frac if spec.fund_to_oi_frac is None else spec.fund_to_oi_frac
    if groups is not None and "segmented" not in modes:
        raise UsageError("--fund-groups applies to --fund-mode segmented, which is not asked for")
    if transfer > 0.0 and "segmented" in modes and risk.liquidation_mode == "dydx_v4":
        raise UsageError(
            f"--segment-transfer-cap-usd {transfer:g} with policy {args.policy!r} "
            "(liquidation_mode dydx_v4): dYdX pays a fill whole from its market's fund or "
            "rejects it, and lending between segments is not built for it; allowed: 0"
        )
    if transfer > 0.0 and "segmented" not in modes:
        raise UsageError(
            "--segment-transfer-cap-usd applies to --fund-mode segmented, which is not asked for"
        )
    if not scenario.collateral:
        sources = sources[:1]
    out = None if args.out is None else Path(args.out)
    if out is not None:
        check_output(out, OUTPUT, force=args.force)
    seed = scenario.seed if args.seed is None else args.seed
    configs = [(m, s) for m in modes for s in sources]
    results: dict[str, MarketsResult] = {}
    start = time.perf_counter()
    bar = progress_bar(len(configs), "configurations", not args.no_progress)
    for mode, source in configs:
        sim = MarketsSimulator(
            scenario,
            risk,
            n_envs=args.episodes,
            n_accounts=args.accounts,
            fund_to_oi_frac=fund_frac,
            vault_to_oi_frac=spec.vault_to_oi_frac,
            vault_adl_loss_frac=spec.vault_adl_loss_frac,
            fund_injection_frac=spec.fund_injection_frac,
            fund_injection_max=spec.fund_injection_max,
            fund_mode=mode,
            fund_groups=groups if mode == "segmented" else None,
            collateral_price=source,
            market_mmr_mult=mults,
            fund_cap_usd=caps,
            market_fund_cap_frac=cap_fracs,
            fund_cap_period=args.fund_cap_period,
            segment_transfer_cap_usd=transfer if mode == "segmented" else 0.0,
            fund_asset=asset,
            fund_allocation=allocation if mode == "shared" else None,
            collateral_haircut_frac=haircuts,
            seed=seed,
        )
        results[_label(mode, source, scenario)] = sim.run()
        bar.update(1)
    bar.close()
    elapsed = time.perf_counter() - start
    rows, market_rows = _rows(results, seed)
    text = _tables(scenario, seed, args, fund_frac, policy_note, rows, market_rows, elapsed)
    print(text)
    if out is not None:
        with output_lock(out, command="fundgym markets"), directory_in_place(out) as tmp:
            (tmp / "markets.csv").write_text(_csv(rows), encoding="utf-8")
            (tmp / "per_market.csv").write_text(_csv(market_rows), encoding="utf-8")
            (tmp / "markets.md").write_text(text + "\n", encoding="utf-8")
            _plot(results, scenario, tmp / "markets.png")
            config = {
                "command": "fundgym markets",
                "scenario": scenario.name,
                "fund_modes": modes,
                "fund_groups": groups,
                "market_mmr_mult": mults,
                "fund_cap_usd": caps,
                "market_fund_cap_frac": cap_fracs,
                "fund_cap_period": args.fund_cap_period,
                "segment_transfer_cap_usd": transfer,
                "fund_allocation": allocation,
                "fund_asset": asset,
                "collateral_haircut": haircuts,
                "collateral_prices": sources,
                "episodes": args.episodes,
                "seed": seed,
                "accounts": args.accounts,
                "fund_frac": fund_frac,
                "policy": args.policy,
                "liquidator_capacity_mult": float(risk.liquidator_capacity_mult),
            }
            (tmp / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
            (tmp / "command.txt").write_text(shlex.join(["fundgym", *sys.argv[1:]]) + "\n")
        print(f"\nwrote {out}/: {', '.join(FILES)}")
    return 0


def _main_run(args: argparse.Namespace) -> int:
    """``--run DIR``: the trained multi-market policy beside the levers' defaults."""
    given = [k for k, v in args.run_fixed.items() if getattr(args, k) != v]
    if given:
        options = ", ".join("--" + k.replace("_", "-") for k in given)
        raise UsageError(
            f"{options}: not with --run, which scores the run under its own settings (its "
            "config.yaml's markets: section); allowed with --run: --scenario, --sampled, "
            "--sampler, --model, --episodes, --seed, --out, --force, --no-progress"
        )
    given_sampler = None if args.sampler is None else _sampler_option(args.sampler)
    model = args.model or BEST  # None when not given, so that main can refuse it without --run
    try:
        runs = load_markets_runs(Path(args.run), model)
        run = next(iter(runs.values()))
        scenario = load_scenario_checked(args.scenario or run.markets.scenario)
        sampler = given_sampler or (_sampler(run) if args.sampled else None)
        for each in runs.values():
            markets_env(each, scenario, sampler)  # every network fits, before any work
    except SpecError as exc:
        raise UsageError(f"--run {args.run}: {exc}") from exc
    group = None not in runs
    out = None if args.out is None else Path(args.out)
    if out is not None:
        check_output(out, OUTPUT, force=args.force)
    seed = scenario.seed if args.seed is None else args.seed
    start = time.perf_counter()
    bar = progress_bar((len(runs) + 1) * args.episodes, "episodes", not args.no_progress)
    rows = []
    traces: dict[str, list[Trace]] = {}
    for row in score_episodes(runs, scenario, args.episodes, seed, traces, sampler):
        rows.append(row)
        bar.update(1)
    bar.close()
    name = Path(args.run).name
    stats = seed_statistics(rows, scenario.name, name) if group else []
    trained = f"{len(runs)} training seeds ({', '.join(map(str, runs))})" if group else "one run"
    used = sorted({r.model_dir.name for r in runs.values() if r.model_dir is not None})
    trained += f", {' and '.join(f'{m}/' for m in used)} model{'s' if group else ''}"
    days = " (drawn days around it: --sampled)" if sampler is not None else ""
    parts = [
        f"fundgym markets --run {args.run}: {scenario.name}{days}, {args.episodes} episodes per "
        f"policy (seeds {seed}..{seed + args.episodes - 1}), {trained}, "
        f"{run.markets.n_accounts:,} accounts, fund {run.markets.fund_mode}, "
        f"{time.perf_counter() - start:.0f} s",
        "",
        summary_table(rows),
    ]
    if group:
        parts += ["", seed_summary(stats, name)]
    text = "\n".join(parts)
    print(text)
    if out is not None:
        with output_lock(out, command="fundgym markets"), directory_in_place(out) as tmp:
            (tmp / "policies.csv").write_text(_csv(rows), encoding="utf-8")
            if group:
                (tmp / "seeds.csv").write_text(_csv(stats), encoding="utf-8")
            minutes = markets_env(run, scenario).decision_minutes
            plot_policies(traces, scenario, minutes, tmp / "policies.png")
            (tmp / "markets.md").write_text(text + "\n", encoding="utf-8")
            config = {
                "command": "fundgym markets",
                "run": str(args.run),
                "model": model,
                "models": {str(k): str(r.model_dir) for k, r in runs.items()},
                "scenario": scenario.name,
                "sampled": None if sampler is None else dataclasses.asdict(sampler),
                "episodes": args.episodes,
                "seed": seed,
                "markets": run.markets.model_dump(mode="python"),
            }
            (tmp / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
            (tmp / "command.txt").write_text(shlex.join(["fundgym", *sys.argv[1:]]) + "\n")
        files = [*RUN_FILES[:1], "seeds.csv", *RUN_FILES[1:]] if group else RUN_FILES
        print(f"\nwrote {out}/: {', '.join(files)}")
    return 0


def _sampler_option(text: str) -> MarketsSamplerSettings:
    """``--sampler crash_prob=0.7,idio_prob=0.5``: the scoring days' sampler settings.

    Raises:
        UsageError: A malformed pair, an unknown key, or a value that is not a number in its
            range (the sampler's schema names it).
    """
    fields = [f.name for f in dataclasses.fields(MarketsSamplerSettings)]
    data: dict[str, float] = {}
    for item in (part.strip() for part in text.split(",")):
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise UsageError(f"--sampler {text!r}: {item!r} is not KEY=VALUE; keys: {fields}")
        if key not in fields:
            raise UsageError(f"--sampler: unknown key {key!r}; allowed: {', '.join(fields)}")
        try:
            data[key] = float(value)
        except ValueError:
            raise UsageError(f"--sampler: {key} = {value!r}: a number in [0, 1]") from None
    try:
        return build(MarketsSamplerSettings, data, "--sampler")
    except SchemaError as exc:
        raise UsageError(str(exc)) from exc


def _sampler(run: MarketsRun) -> MarketsSamplerSettings:
    """``--sampled``: the run's training sampler, or the sampler's defaults."""
    if run.markets.sampler is None:
        return MarketsSamplerSettings()
    return build(MarketsSamplerSettings, dict(run.markets.sampler), "config", "markets.sampler")


def _fund_asset(text: str | None, scenario: Scenario) -> str | dict[str | int, float]:
    """``--fund-asset``: one market's name, or a basket of ``MARKET:W`` pairs."""
    if text is None:
        return scenario.market_names[0]
    names = scenario.market_names
    allowed = f"allowed: {', '.join(names)}"
    if ":" not in text:
        if text not in names:
            raise UsageError(
                f"--fund-asset: {text!r} is not a market of {scenario.name!r}; {allowed}"
            )
        return text
    basket: dict[str | int, float] = {}
    for item in text.split(","):
        name, colon, raw = (part.strip() for part in item.partition(":"))
        if not colon or name not in names:
            raise UsageError(
                f"--fund-asset: {item!r} is not MARKET:WEIGHT with a market of {scenario.name!r}; "
                f"{allowed}"
            )
        if name in basket:
            raise UsageError(f"--fund-asset: {name!r} is named twice in {text!r}")
        try:
            weight = float(raw)
        except ValueError:
            weight = math.nan
        if not (math.isfinite(weight) and weight > 0.0):
            raise UsageError(
                f"--fund-asset: the weight of {name!r} must be a number > 0, got {raw!r}"
            )
        basket[name] = weight
    total = math.fsum(basket.values())
    if abs(total - 1.0) > 1e-9:
        raise UsageError(f"--fund-asset: the weights must sum to 1, got {total:g} in {text!r}")
    return basket


def _with_liquidators(risk: RiskParams, mult: float | None) -> RiskParams:
    """``risk`` with ``--liquidator-capacity-mult``; ``None``: the lever's default (1)."""
    if mult is None:
        return dataclasses.replace(
            risk, liquidator_capacity_mult=LEVERS["liquidator_capacity_mult"].default
        )
    bounds = LEVERS["liquidator_capacity_mult"].bounds
    if not (math.isfinite(mult) and bounds.low <= mult <= bounds.high):
        raise UsageError(
            f"--liquidator-capacity-mult must lie in [{bounds.low:g}, {bounds.high:g}], got {mult}"
        )
    return dataclasses.replace(risk, liquidator_capacity_mult=mult)


def _plot(results: dict[str, MarketsResult], scenario: Scenario, out: Path) -> None:
    """``markets.png``: each configuration's insurance and users' loss, and the markets' paths."""
    first = next(iter(results.values()))
    n = first.fund_usd.shape[0]
    time_min = np.arange(1, n + 1, dtype=np.float64) * scenario.tick_minutes
    configs = {}
    for label, res in results.items():
        start = res.initial_fund_usd.sum(axis=1)  # (E,)
        pots = res.fund_usd.sum(axis=2)  # (n, E)
        fund_frac = np.where(start > 0.0, pots / np.where(start > 0.0, start, 1.0), 0.0)
        oi0 = res.initial_open_interest_usd.sum(axis=1)
        loss = (
            res.event("socialized_loss_usd")
            + res.event("unrecovered_usd")
            + res.event("adl_volume_usd")
        )
        configs[label] = {
            "fund_frac": fund_frac.mean(axis=1),
            "user_loss_frac": (np.cumsum(loss, axis=0) / oi0[None, :]).mean(axis=1),
        }
    index = {name: first.index_price[:, 0, m] for m, name in enumerate(first.market_names)}
    title = f"fundgym markets: {scenario.name}"
    plot_markets_run(time_min, configs, index, title, out, start_utc=scenario.start_utc)


def _label(mode: str, source: str, scenario: Scenario) -> str:
    return f"{mode}, {source}" if scenario.collateral else mode


def _rows(
    results: dict[str, MarketsResult], seed: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """One row per configuration and episode, and one per configuration, episode and market."""
    rows: list[dict[str, Any]] = []
    market_rows: list[dict[str, Any]] = []
    for label, res in results.items():
        tot = res.totals()
        fund_mean = np.concatenate([res.initial_fund_usd[None], res.fund_usd]).sum(axis=2)
        fund_mean = fund_mean.mean(axis=0)
        for e in range(res.events.shape[1]):
            oi0 = float(tot["open_interest_start_usd"][e])
            n_liq = float(tot["n_liquidations"][e])
            rows.append(
                {
                    "config": label,
                    "seed": seed + e,
                    "user_loss_usd": float(tot["user_loss_usd"][e]),
                    "loss_beyond_fund_usd": float(tot["loss_beyond_fund_usd"][e]),
                    "fund_paid_usd": float(tot["shortfall_usd"][e]),
                    "adl_volume_usd": float(tot["adl_volume_usd"][e]),
                    "adl_haircut_usd": float(tot["adl_haircut_usd"][e]),
                    "liquidations_to_oi": float(tot["liquidation_volume_usd"][e]) / oi0,
                    "below_bankruptcy_share": float(tot["n_below_bankruptcy"][e]) / n_liq
                    if n_liq
                    else 0.0,
                    "collateral_seized_usd": float(tot["collateral_seized_usd"][e]),
                    "collateral_depeg_loss_usd": float(tot["collateral_depeg_loss_usd"][e]),
                    "fund_start_usd": float(tot["fund_start_usd"][e]),
                    "fund_mean_usd": float(fund_mean[e]),
                    "fund_end_usd": float(tot["fund_end_usd"][e]),
                    "worst_pot_drawdown_frac": float(tot["fund_drawdown_frac"][e].max()),
                    "fund_transfer_usd": float(tot["fund_transfer_usd"][e]),
                    "open_interest_start_usd": oi0,
                    "open_interest_change_frac": float(tot["open_interest_end_usd"][e]) / oi0 - 1.0,
                    "vault_capital_usd": float(res.vault_capital_usd[e]),
                    "vault_pnl_usd": float(tot["vault_pnl_usd"][e]),
                    "vault_takeovers": float(tot["vault_takeovers"][e]),
                    "vault_takeover_usd": float(tot["vault_takeover_usd"][e]),
                    "vault_adl_usd": float(tot["vault_adl_usd"][e]),
                    "liquidator_absorbed_usd": float(tot["liquidator_absorbed_usd"][e]),
                    "fund_injections": float(res.fund_injections[e]),
                    "fund_injected_usd": float(res.fund_injected_usd[e]),
                }
            )
            for m, name in enumerate(res.market_names):
                pot = int(res.fund_groups[m]) if res.fund_mode == "segmented" else 0
                market_rows.append(
                    {
                        "config": label,
                        "seed": seed + e,
                        "market": name,
                        "pot": pot,
                        "fund_paid_usd": float(tot["market_fund_paid_usd"][e, m]),
                        "adl_volume_usd": float(tot["market_adl_volume_usd"][e, m]),
                        "socialized_usd": float(tot["market_socialized_usd"][e, m]),
                        "unrecovered_usd": float(tot["market_unrecovered_usd"][e, m]),
                        "pot_drawdown_frac": float(tot["fund_drawdown_frac"][e, pot]),
                        "open_interest_start_usd": float(res.initial_open_interest_usd[e, m]),
                        "open_interest_end_usd": float(res.open_interest_usd[-1, e, m]),
                        "index_drawdown_frac": float(
                            1.0
                            - (
                                res.index_price[:, e, m]
                                / np.maximum.accumulate(res.index_price[:, e, m])
                            ).min()
                        ),
                    }
                )
    return rows, market_rows


def _csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    return buf.getvalue()


def _mean(rows: list[dict[str, Any]], config: str, key: str, market: str | None = None) -> float:
    vals = [
        r[key] for r in rows if r["config"] == config and (market is None or r["market"] == market)
    ]
    return float(np.mean(vals))


def _usd(x: float) -> str:
    """``$1,234``, ``$0.123M``, ``-$1,234``: dollars as the tables print them."""
    sign = "-" if x <= -0.5 else ""  # no "-$0"
    x = abs(x)
    return f"{sign}${x / 1e6:,.3f}M" if x >= 1e5 else f"{sign}${x:,.0f}"


def _tables(
    scenario: Scenario,
    seed: int,
    args: argparse.Namespace,
    fund_frac: float,
    policy_note: str,
    rows: list[dict[str, Any]],
    market_rows: list[dict[str, Any]],
    elapsed: float,
) -> str:
    configs = list(dict.fromkeys(r["config"] for r in rows))
    n = args.episodes
    lines = [
        f"fundgym markets: {scenario.name}, {n} episodes per configuration (seeds {seed}.."
        f"{seed + n - 1}), {args.accounts:,} account slots, fund {fund_frac:.2%} of OI, "
        f"{elapsed:.1f} s",
        f"policy: {policy_note}",
        "",
        "| configuration | user loss | beyond the fund | fund paid | ADL notional | "
        "liquidations / OI | below bankruptcy | collateral-depeg loss | fund (mean) | "
        "worst pot drawdown |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in configs:
        lines.append(
            f"| {c} | {_usd(_mean(rows, c, 'user_loss_usd'))} | "
            f"{_usd(_mean(rows, c, 'loss_beyond_fund_usd'))} | "
            f"{_usd(_mean(rows, c, 'fund_paid_usd'))} | {_usd(_mean(rows, c, 'adl_volume_usd'))} | "
            f"{_mean(rows, c, 'liquidations_to_oi'):.1%} | "
            f"{_mean(rows, c, 'below_bankruptcy_share'):.1%} | "
            f"{_usd(_mean(rows, c, 'collateral_depeg_loss_usd'))} | "
            f"{_usd(_mean(rows, c, 'fund_mean_usd'))} | "
            f"{_mean(rows, c, 'worst_pot_drawdown_frac'):.1%} |"
        )
    if any(r["fund_injections"] > 0.0 for r in rows):
        lines += ["", "The venue topped up the exhausted fund (mean per episode):", ""]
        for c in configs:
            lines.append(
                f"- {c}: {_mean(rows, c, 'fund_injections'):.2f} top-ups, "
                f"{_usd(_mean(rows, c, 'fund_injected_usd'))}"
            )
    if any(r["liquidator_absorbed_usd"] > 0.0 for r in rows):
        lines += ["", "Outside liquidators took, at the oracles (mean per episode):", ""]
        for c in configs:
            taken = _mean(rows, c, "liquidator_absorbed_usd")
            lines.append(f"- {c}: {_usd(taken)}")
    if any(r["vault_capital_usd"] > 0.0 for r in rows):
        lines += [
            "",
            "The backstop vault: its PnL at the end against its capital, the accounts it "
            "took over (with every leg), and its own inventory deleveraged beyond its loss "
            "limit (part of the ADL notional above).",
            "",
            "| configuration | vault capital | vault PnL | of capital | takeovers | taken over "
            "| vault deleveraged |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for c in configs:
            capital = _mean(rows, c, "vault_capital_usd")
            pnl = _mean(rows, c, "vault_pnl_usd")
            share = f"{pnl / capital:+.1%}" if capital > 0.0 else "n/a"
            lines.append(
                f"| {c} | {_usd(capital)} | {_usd(pnl)} | {share} | "
                f"{_mean(rows, c, 'vault_takeovers'):.1f} | "
                f"{_usd(_mean(rows, c, 'vault_takeover_usd'))} | "
                f"{_usd(_mean(rows, c, 'vault_adl_usd'))} |"
            )
    lines += [
        "",
        "Per market: what the fund paid toward the market's shortfalls, the notional "
        "deleveraged and the loss socialised in it, and the largest drawdown of the pot that "
        "backs it (the shared fund, or the market's segment).",
        "",
        "| configuration | market | index drawdown | fund paid | ADL notional | socialised | "
        "its pot's drawdown |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    markets = list(dict.fromkeys(r["market"] for r in market_rows))
    for c in configs:
        for m in markets:
            lines.append(
                f"| {c} | {m} | {_mean(market_rows, c, 'index_drawdown_frac', m):.1%} | "
                f"{_usd(_mean(market_rows, c, 'fund_paid_usd', m))} | "
                f"{_usd(_mean(market_rows, c, 'adl_volume_usd', m))} | "
                f"{_usd(_mean(market_rows, c, 'socialized_usd', m))} | "
                f"{_mean(market_rows, c, 'pot_drawdown_frac', m):.1%} |"
            )
    return "\n".join(lines)

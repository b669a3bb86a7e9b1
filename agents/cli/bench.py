"""``fundgym bench``: simulator throughput, run from a source checkout's ``benchmarks/``."""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path
from types import ModuleType

from fundgym.agents.cli.guards import (
    OUTPUT_KINDS,
    UsageError,
    at_least,
    check_output,
    check_seed,
    load_scenario_checked,
)
from fundgym.agents.outputs import write_text_atomic
from fundgym.envs.core.params import ADL_POLICIES, LIQUIDATION_MODES

#: The market regimes ``bench core`` times.
REGIMES = ("quiet", "crash")


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v.replace("_", "")) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from exc
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _name_list(text: str) -> list[str]:
    return [name for name in text.split(",") if name]


def _load_benchmarks(name: str = "bench_core") -> ModuleType:
    """Import ``benchmarks/<name>.py`` from the source checkout."""
    # benchmarks/ is not packaged: bench runs from a source checkout (the folder beside agents/)
    path = Path(__file__).resolve().parent.parent.parent / "benchmarks" / f"{name}.py"
    if not path.is_file():
        raise UsageError(f"fundgym bench needs a source checkout: {path} not found")
    spec = importlib.util.spec_from_file_location(f"benchmarks.{name}", path)
    if spec is None or spec.loader is None:
        raise UsageError(f"{path}: cannot be imported")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _check(args: argparse.Namespace) -> None:
    """Check the options every target shares, and --json, before anything is measured."""
    at_least("--steps", args.steps, 1)
    at_least("--repeats", args.repeats, 1)
    if args.target == "env":  # one size each, and no seed
        at_least("--envs", args.envs, 1)
        at_least("--accounts", args.accounts, 1)
        at_least("--ppo-steps", args.ppo_steps, 0)
        at_least("--threads", args.threads, 1)
    else:
        check_seed("--seed", args.seed)
    if args.json:
        check_output(Path(args.json), OUTPUT_KINDS["bench"], force=args.force, option="--json")


def _bench(args: argparse.Namespace) -> int:
    _check(args)
    bad = [r for r in args.regimes if r not in REGIMES]
    if bad or not args.regimes:
        raise UsageError(
            f"--regimes: unknown regime {bad[0] if bad else ''!r}; allowed: {', '.join(REGIMES)}"
        )
    bench = _load_benchmarks()
    print(f"fundgym bench core on {bench.machine()}")
    print(
        f"one full core step, median of {args.repeats} runs of {args.steps} steps "
        f"(single thread, float64)\n"
    )
    header = f"{'regime':>7s} {'envs':>5s} {'accounts':>9s} {'account-steps/s':>16s}"
    print(header + f" {'(min .. max)':>24s} {'liq/step':>9s}")
    rows = []
    for regime in args.regimes:
        for n_envs in args.envs:
            for n_acc in args.accounts:
                r = bench.time_core(n_envs, n_acc, regime, args.steps, args.repeats, args.seed)
                rows.append(r)
                span = f"{r['min_account_steps_per_s']:.2e} .. {r['max_account_steps_per_s']:.2e}"
                print(
                    f"{regime:>7s} {n_envs:>5d} {n_acc:>9,d} "
                    f"{r['median_account_steps_per_s']:>16.3e} {span:>24s} "
                    f"{r['liquidations_per_step']:>9.1f}",
                    flush=True,
                )
    if args.json:
        _write_json(args.json, {"machine": bench.machine(), "rows": rows})
    return 0


def _write_json(path: str, payload: dict[str, object]) -> None:
    out = Path(path)
    write_text_atomic(out, json.dumps(payload, indent=2))  # no half-written file on failure
    print(f"\nwrote {out}")


def _bench_full(args: argparse.Namespace) -> int:
    _check(args)
    if not args.scenarios:
        raise UsageError("--scenarios: expected comma-separated library scenario names")
    for name in args.scenarios:
        load_scenario_checked(name, "--scenarios")
    for mode in args.liquidation_modes:
        if mode not in LIQUIDATION_MODES:
            raise UsageError(
                f"--liquidation-modes: unknown mode {mode!r}; allowed: "
                f"{', '.join(LIQUIDATION_MODES)}"
            )
    if args.adl_policy not in ADL_POLICIES:
        raise UsageError(
            f"--adl-policy: unknown rule {args.adl_policy!r}; allowed: {', '.join(ADL_POLICIES)}"
        )
    if not 0.0 <= args.vault_to_oi_frac <= 10.0:
        raise UsageError(f"--vault-to-oi-frac: {args.vault_to_oi_frac!r} is not in [0, 10]")
    if args.vault_to_oi_frac > 0.0 and "partial" in args.liquidation_modes:
        raise UsageError(
            "--vault-to-oi-frac: a vault runs only under the venue modes; drop 'partial' from "
            "--liquidation-modes"
        )
    if not 0.0 <= args.liquidation_fee_fund_share <= 1.0:
        raise UsageError(
            f"--liquidation-fee-fund-share: {args.liquidation_fee_fund_share!r} is not in [0, 1]"
        )
    bench = _load_benchmarks("bench_full")
    machine = _load_benchmarks().machine()
    print(f"fundgym bench full on {machine}")
    print(
        f"one full tick (market, population, funding, core), median of {args.repeats} runs of "
        f"{args.steps} ticks\n"
    )
    print(
        f"{'scenario':>12s} {'mode':>11s} {'envs':>5s} {'accounts':>9s} {'account-steps/s':>16s} "
        f"{'liq/step':>9s}   (ADL rule {args.adl_policy}, vault {args.vault_to_oi_frac:g} of OI, "
        f"fund's fee share {args.liquidation_fee_fund_share:g})"
    )
    rows = []
    for scenario in args.scenarios:
        for mode in args.liquidation_modes:
            for n_envs in args.envs:
                for n_acc in args.accounts:
                    r = bench.time_full(
                        n_envs, n_acc, scenario, args.steps, args.repeats, args.seed,
                        liquidation_mode=mode, adl_policy=args.adl_policy,
                        vault_to_oi_frac=args.vault_to_oi_frac,
                        liquidation_fee_fund_share=args.liquidation_fee_fund_share,
                    )  # fmt: skip
                    rows.append(r)
                    print(
                        f"{scenario:>12s} {mode:>11s} {n_envs:>5d} {n_acc:>9,d} "
                        f"{r['median_account_steps_per_s']:>16.3e} "
                        f"{r['liquidations_per_step']:>9.1f}",
                        flush=True,
                    )
    paths = bench.time_paths(args.repeats)
    for name in ("calm", "volatile"):
        print(
            f"one-week path at 1-minute ticks, {name}: median {paths[name]['median_s']:.3f} s "
            f"(max {paths[name]['max_s']:.3f} s)"
        )
    if args.json:
        _write_json(args.json, {"machine": machine, "rows": rows, "paths": paths})
    return 0


def _add_size_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--accounts",
        type=_int_list,
        default=[1_000, 10_000, 100_000],
        help="comma-separated accounts per exchange (default 1000,10000,100000)",
    )
    p.add_argument(
        "--envs",
        type=_int_list,
        default=[1, 16],
        help="comma-separated batch sizes, exchanges stepped together (default 1,16)",
    )


def _add_run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--repeats", type=int, default=5, help="runs per figure (default 5)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    _add_json_arguments(p)


def _add_json_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", metavar="FILE", help="also write the figures to FILE (JSON)")
    p.add_argument("--force", action="store_true", help=OUTPUT_KINDS["bench"].force_help())


def _bench_env(args: argparse.Namespace) -> int:
    _check(args)
    bench = _load_benchmarks("bench_env")
    machine = _load_benchmarks().machine()
    if args.markets is not None:
        return _bench_markets_env(args, bench, machine)
    print(
        f"fundgym bench env on {machine}; {args.accounts:,} accounts, training sampler, "
        f"{args.threads} thread{'s' if args.threads > 1 else ''} per batch"
    )
    r = bench.time_env(args.envs, args.accounts, args.steps, args.repeats, threads=args.threads)
    print(f"single env            {r['single']['median']:>10.1f} env steps/s")
    print(f"batched, {args.envs:>2d} exchanges  {r['batched']['median']:>10.1f} env steps/s")
    print(f"DummyVecEnv, {args.envs:>2d} envs   {r['dummy']['median']:>10.1f} env steps/s")
    print(f"batched / DummyVecEnv {r['batched_over_dummy']:>10.2f}x", flush=True)
    payload: dict[str, object] = {"machine": machine, "env": r}
    if args.ppo_steps > 0:
        p = bench.time_ppo(args.envs, args.accounts, args.ppo_steps, threads=args.threads)
        print(
            f"PPO {p['total_timesteps']:,} steps on the batched env (env on {p['threads']} "
            f"thread{'s' if p['threads'] > 1 else ''}): {p['wall_s']:.1f} s, "
            f"{p['env_share']:.0%} of it inside the environment"
        )
        payload["ppo"] = p
    if args.json:
        _write_json(args.json, payload)
    return 0


def _bench_markets_env(args: argparse.Namespace, bench: ModuleType, machine: str) -> int:
    """``bench env --markets N,...``: the multi-market env's decision cost against N."""
    print(
        f"fundgym bench env --markets on {machine}; MarketsInsuranceFundEnv, {args.accounts:,} "
        f"accounts, random actions, {args.steps} decisions x {args.repeats} runs per count"
    )
    r = bench.time_markets_env(
        args.markets, args.accounts, args.steps, args.repeats, n_envs=args.envs
    )
    first = r["rows"][0]
    batched = args.envs > 1
    extra = f" {f'batch of {args.envs}: ms/exchange':>25} {'faster':>7}" if batched else ""
    print(
        f"{'markets':>8} {'decisions/s':>12} {'ms/decision':>12} {'per market':>11} "
        f"{'cost x':>7}{extra}"
    )
    for row in r["rows"]:
        grow = row["ms_per_decision"] / first["ms_per_decision"]
        line = (
            f"{row['markets']:>8d} {row['median']:>12.1f} {row['ms_per_decision']:>12.2f} "
            f"{row['ms_per_decision_per_market']:>11.2f} {grow:>6.2f}x"
        )
        if batched:
            b = row["batch"]
            line += f" {b['ms_per_decision']:>25.2f} {b['speedup']:>6.2f}x"
        print(line)
    print(
        "linear growth in N keeps 'per market' flat or falling; the issue's bar is decision "
        "cost no worse than linear in N"
    )
    if batched:
        print(
            f"batch: MarketsInsuranceFundVectorEnv, {args.envs} exchanges on one simulator "
            "(ms per exchange-decision; 'faster': one env per exchange / the batch)"
        )
    if args.json:
        _write_json(args.json, {"machine": machine, "markets_env": r})
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``fundgym bench core|full|env``."""
    p_bench = sub.add_parser(
        "bench",
        help="measure simulator throughput (from a source checkout)",
        description="Measure simulator throughput; figures go to docs/benchmarks.md.",
    )
    bench_sub = p_bench.add_subparsers(dest="target", metavar="TARGET", required=True)
    p_core = bench_sub.add_parser(
        "core",
        help="account-steps per second of one full core step",
        description=(
            "Account-steps per second of one full core step (mark to market, margin check, "
            "liquidation fills, fund accounting, fallback) in a quiet and a crash regime, "
            "median of several runs."
        ),
    )
    _add_size_arguments(p_core)
    p_core.add_argument(
        "--regimes",
        type=_name_list,
        default=["quiet", "crash"],
        help="comma-separated regimes: quiet, crash (default both)",
    )
    p_core.add_argument("--steps", type=int, default=200, help="timed steps per run (default 200)")
    _add_run_arguments(p_core)
    p_core.set_defaults(func=_bench)

    p_full = bench_sub.add_parser(
        "full",
        help="account-steps per second of a full tick (market, population, core)",
        description=(
            "Account-steps per second of the full simulation tick (market, trader population, "
            "funding, core) on library scenarios, and seconds to sample a one-week path."
        ),
    )
    _add_size_arguments(p_full)
    p_full.add_argument(
        "--scenarios",
        type=_name_list,
        default=["volatile", "oct_10_2025"],
        help="comma-separated library scenarios (default volatile,oct_10_2025; a crash "
        "scenario is timed on its sharpest leg, moved to minute 5)",
    )
    p_full.add_argument("--steps", type=int, default=60, help="timed ticks per run (default 60)")
    p_full.add_argument(
        "--liquidation-modes",
        type=_name_list,
        default=["partial"],
        help="comma-separated venue liquidation modes to time side by side (default partial; "
        f"allowed: {', '.join(LIQUIDATION_MODES)})",
    )
    p_full.add_argument(
        "--adl-policy",
        default="bitmex",
        help=f"the ADL rule in force (default bitmex; allowed: {', '.join(ADL_POLICIES)})",
    )
    p_full.add_argument(
        "--vault-to-oi-frac",
        type=float,
        default=0.0,
        help="backstop vault capital as a share of open interest (default 0: none; venue "
        "liquidation modes only), to time the vault's stage",
    )
    p_full.add_argument(
        "--liquidation-fee-fund-share",
        type=float,
        default=1.0,
        help="the fund's share of the liquidation fee (default 1: outside liquidators earn "
        "nothing and take no flow); below 1 times their stage",
    )
    _add_run_arguments(p_full)
    p_full.set_defaults(func=_bench_full)

    p_env = bench_sub.add_parser(
        "env",
        help="env steps per second: single, batched, DummyVecEnv; PPO's time in the env",
        description=(
            "Environment steps (decisions) per second of the single env, the batched twin and "
            "SB3's DummyVecEnv of single envs, and the share of PPO's wall time spent in the "
            "environment."
        ),
    )
    p_env.add_argument("--envs", type=int, default=16, help="exchanges batched (default 16)")
    p_env.add_argument("--accounts", type=int, default=1024, help="accounts (default 1024)")
    p_env.add_argument("--steps", type=int, default=50, help="timed steps per run (default 50)")
    p_env.add_argument("--repeats", type=int, default=3, help="runs per figure (default 3)")
    p_env.add_argument(
        "--threads",
        type=int,
        default=1,
        help="threads the batched env spreads its exchanges over (its threads argument; "
        "results are bit-identical to one thread; default 1). Torch keeps one thread under PPO",
    )
    p_env.add_argument(
        "--markets",
        type=_int_list,
        default=None,
        metavar="N[,N...]",
        help="time the multi-market env (fundgym/MarketsInsuranceFund-v0) instead, at each "
        "market count (BTC plus N-1 ETH-like markets, a quiet day): decisions/s and ms per "
        "decision against N, and with --envs above 1 the batch of that many exchanges "
        "(MarketsInsuranceFundVectorEnv: ms per exchange-decision; --envs 1 skips it); "
        "--ppo-steps does not apply",
    )
    p_env.add_argument(
        "--ppo-steps",
        type=int,
        default=8192,
        help="PPO timesteps for the env-share measure, 0 to skip (default 8192)",
    )
    _add_json_arguments(p_env)
    p_env.set_defaults(func=_bench_env)

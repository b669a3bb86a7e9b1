"""The training distribution: random regimes with injected crashes a policy cannot memorise.

Each draw is a valid :class:`~fundgym.envs.scenarios.Scenario`: a base market (volatility, tails,
jump rate and regime switching drawn around the calm and volatile library entries) and, with
probability ``crash_prob``, a crash whose start, shape (one leg, two legs with a pause, a
V-recovery, a stepwise decline, a venue wick or an upward pump), severity, depth collapse and
precursor strength are all random. A third of the crashes arrive with no warning (precursor strength
0), so evaluation can separate anticipation from reaction. The named historical scenarios stay out
of training (``training: false`` in their files).

Book depth. The simulated book is set against the exchange's own open interest: each draw
gives ``depth.oi_to_depth``, the starting open interest over the normal depth within 1%, so
liquidation flow moves the price as much as it would on a real venue of that market, whatever
the simulated book's size (docs/impact.md). A major sits at 100-300 (:data:`MAJOR_OI_TO_DEPTH`),
a thin market at 1,000-10,000 (:data:`THIN_OI_TO_DEPTH`).

Thin markets. With probability ``thin_prob`` the market is a small token's. Thin books are
where oracle manipulation pays (Mango, Oct 2022: the attacker's profit is the perp open
interest he can mark up, his cost the spot depth he must walk through), so half of a thin
market's crashes are pumps: the index, and with it the oracle, is pushed up 100%-2,500% in
5-30 minutes with no warning, sags, then is released. A major market's pump is a short squeeze
of 10%-50%. A policy can see thinness (``oi_to_depth_log10`` in the observation) before
anything happens, which is the only warning a manipulation gives.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

from fundgym.envs.scenarios import (
    CollapseSpec,
    IdioCrashSpec,
    LegSpec,
    MarketSpec,
    Scenario,
    scenario_from_dict,
    scenario_from_draw,
)
from fundgym.envs.schema import SchemaError, spec

#: Longest training episode, minutes (90 days). The draws' largest volatility (80% x regimes up
#: to x3) and jumps (2 a day x3 of mean -1.5%) break the scenario schema's base-process budget
#: (drift + 10 sd of the log move <= ln 1e10) at about 95 days; a longer horizon is refused here,
#: naming the horizon, rather than by the budget at some later draw.
MAX_TRAINING_HORIZON_MINUTES = 90 * 1440.0
#: A training draw's length when none is set (one day: ``EnvConfig.horizon_minutes`` None).
DEFAULT_TRAINING_HORIZON_MINUTES = 1440.0


@dataclass(frozen=True)
class SamplerSettings:
    """How the training distribution is weighted (``env.sampler`` in a config).

    Catastrophes are rare in the world and in the default mix; a risk team that cares about
    the tail can train on more of them (stress oversampling) without touching the shapes.
    """

    crash_prob: float = spec(0.7, ge=0.0, le=1.0, doc="share of draws with a crash")
    thin_prob: float = spec(0.25, ge=0.0, le=1.0, doc="share of thin (manipulable) markets")


def _leg(
    kind: str, minutes: float, ret: float = 0.0, shape: str = "linear", n: int = 1
) -> dict[str, Any]:
    return {
        "kind": kind,
        "minutes": float(minutes),
        "return_frac": float(ret),
        "shape": shape,
        "n_steps": n,
    }


#: Open interest / normal depth per 1% of price (``depth.oi_to_depth``), log-uniform.
#: A major: [E] 100-300. BTC's aggregate OI of $49.5B against about $220M per 1% (2024) gives
#: about 225 (/work/shared/reference/outcomes.md, [S66] [S97]); the library's calibrated majors
#: run at 100 (Black Thursday, FTX) to 330 (volatile), so 100-300 brackets them.
MAJOR_OI_TO_DEPTH = (100.0, 300.0)
#: A thin token: [E] 1,000-10,000. The low end is where BTC itself stood at the bottom of
#: 10 Oct 2025's -90% depth collapse (above 2,000, outcomes.md): a thin market's normal book is
#: at least that thin against its OI. The high end is a market whose OI was run well past its
#: book (dYdX's YFI OI rose 84-fold, $0.8M to $67M, Nov 2023). Drawn up to 30,000, a pump's
#: liquidation flow alone took the index to the impact's 100x bound in 3 of 49 thin training
#: episodes (30x the starting OI liquidated, beyond Mango's whole loss): the library's
#: ``oracle_manipulation`` keeps such a runaway; training draws stop at 10,000.
THIN_OI_TO_DEPTH = (1e3, 1e4)
#: The real venue's depth, USD per 1% of price, a major (BTC, ETH on large venues) and a thin
#: token: ``depth.normal_usd_per_pct``, which the schema requires and the simulated book does
#: not read once ``oi_to_depth`` is set (it stays the scenario's record of the venue).
MAJOR_DEPTH_USD_PER_PCT = (3e7, 3e8)
THIN_DEPTH_USD_PER_PCT = (2e4, 2e6)
#: Crash shapes and their probabilities in a major and in a thin market.
CRASH_KINDS = ("single", "two_leg", "v", "steps", "wick", "pump")
MAJOR_KIND_PROBS = (0.18, 0.18, 0.18, 0.18, 0.18, 0.10)
THIN_KIND_PROBS = (0.10, 0.10, 0.10, 0.10, 0.10, 0.50)


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


def _book(rng: np.random.Generator, thin: bool) -> dict[str, float]:
    """The ``depth`` section's book: the ratio and the real venue's depth, log-uniform.

    Both come from one uniform draw, the same quantile of their ranges: one draw is what the
    sampler took for the book before the ratio existed, so every other field of a seed's
    scenario is what it was.
    """
    u = float(rng.uniform())
    ratio_low, ratio_high = THIN_OI_TO_DEPTH if thin else MAJOR_OI_TO_DEPTH
    depth_low, depth_high = THIN_DEPTH_USD_PER_PCT if thin else MAJOR_DEPTH_USD_PER_PCT
    return {
        "oi_to_depth": ratio_low * (ratio_high / ratio_low) ** u,
        "normal_usd_per_pct": depth_low * (depth_high / depth_low) ** u,
    }


def _pump_legs(rng: np.random.Generator, thin: bool) -> list[dict[str, Any]]:
    """Run-up, sag, release: Mango's +2,295% in 15 min, -5% over 25, -96% over an hour.

    In a thin market the run-up is 100%-2,500% (a manipulation); in a major one a short
    squeeze of 10%-50%. The release ends between 20% below and 50% above the start.
    """
    run_up = _log_uniform(rng, 1.0, 25.0) if thin else float(rng.uniform(0.1, 0.5))
    sag = -float(rng.uniform(0.0, 0.1))
    end_level = _log_uniform(rng, 0.8, 1.5)
    release = max(0.0, 1.0 - end_level / ((1.0 + run_up) * (1.0 + sag)))
    return [
        _leg("recovery", float(rng.uniform(5, 30)), run_up),
        _leg("decline", float(rng.uniform(10, 40)), sag),
        _leg("decline", float(rng.uniform(30, 120)), -release, "accelerating"),
    ]


@functools.lru_cache(maxsize=64)
def _check_settings(horizon_minutes: float, tick_minutes: float, price: float) -> None:
    """The caller's clock, horizon and price through the scenario schema, once per setting.

    Every other value of a draw is drawn inside its field's range, so a draw is built
    without re-checking each value (:func:`~fundgym.envs.scenarios.scenario_from_draw`);
    what the caller chooses is checked here, by the schema itself, on the calmest scenario
    the sampler can draw (its lowest volatility, no jumps, regimes or crash), whose bounds
    every draw's include. A failing setting raises and is not cached.
    """
    scenario_from_dict(
        {
            "name": "training_sample",
            "description": "randomised training scenario",
            "tick_minutes": tick_minutes,
            "horizon_minutes": horizon_minutes,
            "price": {"initial": price, "vol_annual": 0.3, "jumps": {"rate_per_day": 0.0}},
            "depth": {"normal_usd_per_pct": MAJOR_DEPTH_USD_PER_PCT[0]},
        },
        "<training sampler>",
    )


def sample_training_scenario(
    rng: np.random.Generator,
    *,
    horizon_minutes: float = DEFAULT_TRAINING_HORIZON_MINUTES,
    tick_minutes: float = 1.0,
    crash_prob: float = 0.7,
    thin_prob: float = 0.25,
    price: float = 100_000.0,
) -> Scenario:
    """Draw one training scenario (see the module docstring).

    Raises:
        SchemaError: ``horizon_minutes`` outside ``(0, 90 days]``
            (:data:`MAX_TRAINING_HORIZON_MINUTES`).
        ValueError: A probability outside ``[0, 1]``.
    """
    for name, value in (("crash_prob", crash_prob), ("thin_prob", thin_prob)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must lie in [0, 1], got {value!r}")
    if not 0.0 < horizon_minutes <= MAX_TRAINING_HORIZON_MINUTES:
        raise SchemaError(
            "<training sampler>",
            "horizon_minutes",
            horizon_minutes,
            f"a number in (0, {MAX_TRAINING_HORIZON_MINUTES:g}] (90 days: longer random draws can "
            "exceed the scenario schema's bound on the base process's log move)",
        )
    _check_settings(horizon_minutes, tick_minutes, price)
    thin = bool(rng.random() < thin_prob)
    vol = float(rng.uniform(0.3, 0.8))
    regime = bool(rng.random() < 0.5)
    data: dict[str, Any] = {
        "name": "training_sample",
        "description": "randomised training scenario",
        "seed": int(rng.integers(0, 2**31 - 1)),
        "tick_minutes": tick_minutes,
        "horizon_minutes": horizon_minutes,
        "training": True,
        "price": {
            "initial": price,
            "vol_annual": vol,
            "garch": {
                "alpha": float(rng.uniform(0.03, 0.1)),
                "beta": 0.88,
                "nu": float(rng.uniform(3.0, 6.0)),
            },
            "jumps": {
                "rate_per_day": float(rng.uniform(0.2, 2.0)),
                "mean_log": float(rng.uniform(-0.015, 0.0)),
                "std_log": 0.01,
            },
        },
        "depth": _book(rng, thin),
    }
    if regime:
        data["price"]["regimes"] = {
            "vol_multipliers": [1.0, 1.75, 3.0],
            "switch_rate_per_day": [[0, 3, 0.2], [4, 0, 1], [0.5, 6, 0]],
            "initial": int(rng.integers(0, 2)),
        }
    if rng.random() < crash_prob:
        severity = float(rng.uniform(0.05, 0.5))
        kind = str(rng.choice(CRASH_KINDS, p=THIN_KIND_PROBS if thin else MAJOR_KIND_PROBS))
        fall_min = float(rng.uniform(5, 180))
        if kind == "pump":
            legs = _pump_legs(rng, thin)
        elif kind == "single":
            legs = [_leg("decline", fall_min, -severity, "accelerating")]
        elif kind == "two_leg":
            first = severity * float(rng.uniform(0.3, 0.6))
            second = 1.0 - (1.0 - severity) / (1.0 - first)
            legs = [
                _leg("decline", fall_min / 2, -first),
                _leg("pause", float(rng.uniform(30, 240))),
                _leg("decline", fall_min / 2, -second, "accelerating"),
            ]
        elif kind == "v":
            legs = [
                _leg("decline", fall_min, -severity, "accelerating"),
                _leg(
                    "recovery",
                    fall_min * 4,
                    severity * float(rng.uniform(0.5, 1.0)),
                    "front_loaded",
                ),
            ]
        elif kind == "steps":
            legs = [_leg("steps", fall_min * 4, -severity, n=int(rng.integers(2, 6)))]
        else:
            legs = [_leg("wick", 2, -min(0.9, severity * 2))]
        total = sum(leg["minutes"] for leg in legs)
        room = 0.8 * horizon_minutes  # short episodes get a faster crash, not an invalid one
        if total > room:
            for leg in legs:
                leg["minutes"] *= room / total
            total = sum(leg["minutes"] for leg in legs)
        latest = max(0.0, horizon_minutes - total - 1.0)
        # A manipulator picks his moment: a pump may come at any time after the first half
        # hour; other crashes come after the first quarter of the episode.
        earliest = 30.0 if kind == "pump" else horizon_minutes * 0.25
        start = float(rng.uniform(min(latest, earliest), latest))
        data["crash"] = {
            "start_minute": start,
            "legs": legs,
            "vol_multiplier": float(rng.uniform(1, 3)),
        }
        data["depth"]["collapses"] = [
            {
                "start_minute": start,
                "minutes_to_floor": float(rng.uniform(1, 30)),
                "floor_mult": float(np.exp(rng.uniform(np.log(0.02), np.log(0.6)))),
                "hold_minutes": float(rng.uniform(5, 60)),
                "recovery_half_life_minutes": float(rng.uniform(15, 240)),
            }
        ]
        strength = 0.0 if rng.random() < 1.0 / 3.0 else float(rng.uniform(0.1, 1.0))
        if kind == "pump" and thin:
            strength = 0.0  # a manipulation gives no warning but the thin book itself
            data["oracle"] = {"source": "index"}  # the oracle reads the pumped spot venues
        data["precursors"] = {
            "strength": strength,
            "lead_minutes": float(max(30.0, min(start, 720.0))),
        }
    return scenario_from_draw(data, "<training sampler>")


# ==== many markets ====

#: A market listed beside the factor is *thin* when its normal book is below this share of the
#: factor market's (``depth_scale``): ``alt_contagion``'s ALT sits at 0.005, ETH at 0.4. [E]
THIN_DEPTH_SCALE = 0.05
#: A thin market's multiple of the common crash's log move (10 Oct 2025: the alts fell 4-6 x
#: BTC's log move, ``oct_10_2025_multi``'s ``crash_beta``; 2 keeps milder days in). [E]
THIN_CRASH_BETA = (2.0, 6.0)
#: A thin market's own crash: its total fall and its duration, minutes. ``alt_contagion``'s ALT
#: falls 80% in 30 minutes; 10 Oct's alts fell 40-70% in minutes, LUNA 99.9% over days. [E]
IDIO_CRASH_FALL = (0.3, 0.9)
IDIO_CRASH_MINUTES = (5.0, 60.0)


@dataclass(frozen=True)
class MarketsSamplerSettings:
    """The multi-market training distribution (``markets.sampler`` in a config).

    Each draw keeps the template scenario's markets (names, prices, betas, books, open-interest
    shares, collateral) and draws the day around them: the factor market's process, crash and
    book collapse as the one-market sampler draws a major's, and each thin market's share of
    that crash and its own crash.
    """

    crash_prob: float = spec(0.7, ge=0.0, le=1.0, doc="share of draws with a common crash")
    idio_prob: float = spec(
        0.5, ge=0.0, le=1.0, doc="chance that each thin market crashes on its own"
    )


def _thin_market(
    rng: np.random.Generator, market: MarketSpec, start: float | None, horizon: float
) -> MarketSpec:
    """``market`` (a thin one) with a crash of its own, its book collapsing with it.

    The caller decided that it crashes (``idio_prob``); this draws the fall, its legs and its
    moment. ``start``: the common crash's first minute (``None``: no common crash).
    """
    fall = float(rng.uniform(*IDIO_CRASH_FALL))
    minutes = float(rng.uniform(*IDIO_CRASH_MINUTES))
    if rng.random() < 0.5:  # one accelerating leg
        legs: tuple[Any, ...] = (LegSpec("decline", minutes, -fall, "accelerating"),)
    else:  # two: the first a share of the fall, then the rest (alt_contagion's shape)
        first = fall * float(rng.uniform(0.3, 0.8))
        second = 1.0 - (1.0 - fall) / (1.0 - first)
        legs = (
            LegSpec("decline", minutes / 3.0, -first, "accelerating"),
            LegSpec("decline", 2.0 * minutes / 3.0, -second, "front_loaded"),
        )
    latest = max(0.0, horizon - minutes - 1.0)
    if start is not None and rng.random() < 0.5:  # with the common crash, within the hour
        at = float(np.clip(start + rng.uniform(-60.0, 60.0), 0.0, latest))
    else:  # on its own, after the first quarter of the day
        at = float(rng.uniform(min(0.25 * horizon, latest), latest))
    collapse = CollapseSpec(
        start_minute=at,
        minutes_to_floor=float(rng.uniform(1.0, 15.0)),
        floor_mult=_log_uniform(rng, 0.01, 0.3),
        hold_minutes=float(rng.uniform(10.0, 120.0)),
        recovery_half_life_minutes=float(rng.uniform(30.0, 240.0)),
    )
    return dataclasses.replace(
        market,
        idio_crash=IdioCrashSpec(start_minute=at, legs=legs),
        depth_collapses=(collapse,),
        target_drawdown_frac=None,
    )


def sample_markets_scenario(
    rng: np.random.Generator,
    template: Scenario,
    settings: MarketsSamplerSettings | None = None,
) -> Scenario:
    """Draw one multi-market training day on ``template``'s markets.

    The factor market (``markets[0]``) gets a major's day from :func:`sample_training_scenario`
    at the template's horizon, clock and price (its process, and with probability
    ``crash_prob`` a crash with its book collapse and precursors; never a thin market's
    pump). Every other market keeps the template's listing (price, beta, own noise and jumps,
    book share, open-interest share) and follows the factor's crash by its beta; a thin one
    (``depth_scale`` below :data:`THIN_DEPTH_SCALE`) falls :data:`THIN_CRASH_BETA` times the
    crash's log move instead, and with probability ``idio_prob`` crashes on its own
    (:data:`IDIO_CRASH_FALL` in :data:`IDIO_CRASH_MINUTES`, one leg or two, its book
    collapsing with it), half the time within an hour of the common crash. The draw keeps
    the template's collateral, events and attacker; its name is the template's with
    ``~sampled``.

    Raises:
        ValueError: ``template`` lists fewer than two markets.
    """
    s = settings or MarketsSamplerSettings()
    if len(template.markets) < 2:
        raise ValueError(
            f"the multi-market sampler draws around a scenario of several markets; "
            f"{template.name!r} lists {len(template.markets)}"
        )
    day = sample_training_scenario(
        rng,
        horizon_minutes=template.horizon_minutes,
        tick_minutes=template.tick_minutes,
        crash_prob=s.crash_prob,
        thin_prob=0.0,
        price=template.price.initial,
    )
    start = None if day.crash is None else day.crash.start_minute
    markets = [template.markets[0]]
    for m in template.markets[1:]:
        m = dataclasses.replace(
            m, crash_returns=None, crash_beta=None, idio_crash=None, target_drawdown_frac=None
        )
        if m.depth_scale < THIN_DEPTH_SCALE:
            beta = float(rng.uniform(*THIN_CRASH_BETA))
            if day.crash is not None:  # drawn either way: a day's draws keep their order
                m = dataclasses.replace(m, crash_beta=beta)
            if rng.random() < s.idio_prob:
                m = _thin_market(rng, m, start, template.horizon_minutes)
            else:
                m = dataclasses.replace(m, depth_collapses=None)
        markets.append(m)
    return dataclasses.replace(
        template,
        name=f"{template.name}~sampled",
        seed=day.seed,
        price=day.price,
        crash=day.crash,
        depth=day.depth,
        precursors=day.precursors,
        targets=day.targets,
        training=True,
        markets=tuple(markets),
    )

"""The training distribution: random regimes with injected crashes a policy cannot memorise.

Each draw is a valid :class:`~envs.scenarios.Scenario`: a base market (volatility, tails, jump
rate and regime switching drawn around the calm and volatile library entries) and, with
probability ``crash_prob``, a crash whose start, shape (one leg, two legs with a pause, a
V-recovery, a stepwise decline or a venue wick), severity, depth collapse and precursor
strength are all random. A third of the crashes arrive with no warning (precursor strength 0),
so evaluation can separate anticipation from reaction. The named historical scenarios stay out
of training (``training: false`` in their files).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from envs.scenarios import Scenario, scenario_from_dict


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


def sample_training_scenario(
    rng: np.random.Generator,
    *,
    horizon_minutes: float = 1440.0,
    tick_minutes: float = 1.0,
    crash_prob: float = 0.7,
    price: float = 100_000.0,
) -> Scenario:
    """Draw one training scenario (see the module docstring)."""
    if not 0.0 <= crash_prob <= 1.0:
        raise ValueError(f"crash_prob must lie in [0, 1], got {crash_prob!r}")
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
        "depth": {"normal_usd_per_pct": float(np.exp(rng.uniform(np.log(3e7), np.log(3e8))))},
    }
    if regime:
        data["price"]["regimes"] = {
            "vol_multipliers": [1.0, 1.75, 3.0],
            "switch_rate_per_day": [[0, 3, 0.2], [4, 0, 1], [0.5, 6, 0]],
            "initial": int(rng.integers(0, 2)),
        }
    if rng.random() < crash_prob:
        severity = float(rng.uniform(0.05, 0.5))
        kind = rng.choice(["single", "two_leg", "v", "steps", "wick"])
        fall_min = float(rng.uniform(5, 180))
        if kind == "single":
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
        start = float(rng.uniform(min(latest, horizon_minutes * 0.25), latest))
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
        data["precursors"] = {
            "strength": strength,
            "lead_minutes": float(max(30.0, min(start, 720.0))),
        }
    return scenario_from_dict(data, "<training sampler>")

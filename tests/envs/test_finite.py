"""Finite or refused: an in-range scenario draws finite paths; anything else is a clear error.

The property test draws scenarios from the schema's own ranges (read from the field metadata,
so it follows the schema when a bound changes), extremes included, on short horizons. Every
draw either builds, and then its paths are finite and positive on a few exchanges, or is
refused by a cross-field budget with a :class:`SchemaError`; nothing else may happen.
"""

import dataclasses
import math
import typing

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fundgym.envs.scenarios as scenarios_module
from fundgym.envs.market.market import sample_market
from fundgym.envs.scenarios import (
    MAX_RANDOM_LOG_MOVE,
    MAX_TICK_SIGMA,
    CollapseSpec,
    CrashSpec,
    DepthSpec,
    FundingSpec,
    GarchSpec,
    JumpSpec,
    LegSpec,
    ManipulationSpec,
    MarketPath,
    NonFinitePathError,
    OracleSpec,
    PrecursorSpec,
    PriceSpec,
    RegimeSpec,
    VenueSpec,
    WickSpec,
    check_path,
    load_scenario,
    market_path,
    scenario_from_dict,
)
from fundgym.envs.schema import SchemaError

# ---- strategies read from the schema ---------------------------------------------------------


def _meta(cls: type, name: str) -> typing.Mapping[str, typing.Any]:
    return {f.name: f for f in dataclasses.fields(cls)}[name].metadata


def in_range(cls: type, name: str) -> st.SearchStrategy[float]:
    """Any float the schema accepts for ``cls.name`` (hypothesis favours the end points)."""
    m = _meta(cls, name)
    low = m["gt"] if m["gt"] is not None else m["ge"]
    high = m["lt"] if m["lt"] is not None else m["le"]
    return st.floats(
        low,
        high,
        exclude_min=m["gt"] is not None,
        exclude_max=m["lt"] is not None,
        allow_nan=False,
        allow_infinity=False,
    )


def section(cls: type, skip: tuple[str, ...] = ()) -> st.SearchStrategy[dict]:
    """Every ranged float field of ``cls`` (a section of the schema), drawn in range."""
    names = [
        f.name
        for f in dataclasses.fields(cls)
        if f.name not in skip and f.metadata.get("le") is not None
    ]
    return st.fixed_dictionaries({n: in_range(cls, n) for n in names})


@st.composite
def scenarios(draw: st.DrawFn) -> dict:
    """A scenario dict with every field in range, times placed inside a short horizon."""
    horizon = draw(st.floats(1.0, 400.0))
    tick = draw(st.sampled_from([0.5, 1.0, 2.5, 15.0, 1440.0]))
    within = st.floats(0.0, 2.0 * horizon)
    price = draw(section(PriceSpec))
    price["model"] = draw(st.sampled_from(["garch_t", "gbm"]))
    price["garch"] = draw(section(GarchSpec))
    price["jumps"] = draw(section(JumpSpec))
    if draw(st.booleans()):
        k = draw(st.integers(1, 3))
        price["regimes"] = {
            "vol_multipliers": draw(st.lists(in_range(RegimeSpec, "vol_multipliers"), **_n(k))),
            "switch_rate_per_day": [
                draw(st.lists(in_range(RegimeSpec, "switch_rate_per_day"), **_n(k)))
                for _ in range(k)
            ],
            "initial": draw(st.integers(0, k - 1)),
        }
    depth = draw(section(DepthSpec))
    depth["collapses"] = [
        {
            **draw(section(CollapseSpec, skip=("start_minute", "minutes_to_floor"))),
            "start_minute": draw(within),
            "minutes_to_floor": draw(within),
        }
        for _ in range(draw(st.integers(0, 3)))
    ]
    data: dict = {
        "name": "drawn",
        "description": "a scenario drawn from the schema's ranges",
        "horizon_minutes": horizon,
        "tick_minutes": tick,
        "price": price,
        "depth": depth,
        "venue": {
            **draw(section(VenueSpec)),
            "mark_method": draw(st.sampled_from(["median", "last"])),
            "wicks": [
                {
                    "minute": draw(within),
                    "return_frac": draw(in_range(WickSpec, "return_frac")),
                    "ticks": draw(st.integers(1, 1000)),
                }
                for _ in range(draw(st.integers(0, 3)))
            ],
        },
        "oracle": {
            "source": draw(st.sampled_from(["mark", "index"])),
            "delay_minutes": draw(st.floats(0.0, 2.0 * horizon)),
            "floor_price": draw(st.none() | in_range(OracleSpec, "floor_price")),
            "freezes": [
                {"start_minute": draw(within), "minutes": draw(st.floats(0.1, horizon))}
                for _ in range(draw(st.integers(0, 2)))
            ],
            "manipulations": [
                {
                    "start_minute": draw(within),
                    "minutes": draw(st.floats(0.1, horizon)),
                    "return_frac": draw(in_range(ManipulationSpec, "return_frac")),
                }
                for _ in range(draw(st.integers(0, 3)))
            ],
        },
        "funding": draw(section(FundingSpec)),
        "precursors": draw(section(PrecursorSpec)),
    }
    if draw(st.booleans()):  # a crash: legs in range, placed to end inside the horizon
        start = draw(st.floats(0.0, 0.5)) * horizon
        weights = draw(st.lists(st.floats(0.01, 1.0), min_size=1, max_size=4))
        room = (horizon - start) * 0.999
        data["crash"] = {
            **draw(section(CrashSpec, skip=("start_minute",))),
            "start_minute": start,
            "legs": [
                {
                    "kind": draw(
                        st.sampled_from(["decline", "recovery", "pause", "steps", "wick"])
                    ),
                    "minutes": room * w / sum(weights),
                    "return_frac": draw(in_range(LegSpec, "return_frac")),
                    "shape": draw(st.sampled_from(["linear", "accelerating", "front_loaded"])),
                    "n_steps": draw(st.integers(1, 1000)),
                }
                for w in weights
            ],
        }
    return data


def _n(k: int) -> dict:
    return {"min_size": k, "max_size": k}


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=scenarios(), seed=st.integers(0, 2**32 - 1))
def test_an_in_range_scenario_draws_finite_paths_or_is_refused(data, seed):
    try:
        sc = scenario_from_dict(data, "<drawn>")
    except SchemaError as exc:  # a cross-field budget: refused with the rule, never a crash
        assert "<drawn>: " in str(exc)
        return
    bound = sc.base_process_bound()
    assert bound.tick_sigma <= MAX_TICK_SIGMA and bound.log_move <= MAX_RANDOM_LOG_MOVE
    path = market_path(sc, np.random.default_rng(seed), 3)  # raises if not finite
    for name in ("index", "wick", "depth_mult", "manipulation", "vol_mult"):
        values = getattr(path, name)
        assert np.isfinite(values).all() and (values > 0).all(), name
    assert np.isfinite(path.basis).all()
    cols = sample_market(sc, seed)
    for name in ("index_price", "last_price", "mark_price", "oracle_price", "depth_usd"):
        assert np.isfinite(cols[name]).all() and (cols[name] > 0).all(), name
    assert np.isfinite(cols["funding_rate"]).all()


# ---- the budgets at their edge ---------------------------------------------------------------


def test_the_base_process_at_its_limits_stays_finite():
    # Largest volatility (5) on a 52-minute clock: one tick's std is 5 x sqrt(52 / 525,600) =
    # 0.04973, just under the 0.05 limit. 1,700 ticks: V = 1,700 x 0.04973^2 = 4.205, so the
    # budget is 0.5 V + 10 sqrt(V) = 2.102 + 20.51 = 22.61, just under ln(1e10) = 23.03. With
    # the GARCH reaction and tails that gave the largest excursions when the bounds were chosen
    # (alpha 0.1, nu 3), 400 paths stay finite and positive from the lowest start price.
    sigma_tick = 5.0 * math.sqrt(52.0 / 525_600.0)
    n = 1700
    sc = scenario_from_dict(
        {
            "name": "edge",
            "description": "the base-process bounds at their limit",
            "tick_minutes": 52.0,
            "horizon_minutes": 52.0 * n,
            "price": {
                "initial": 1e-9,
                "vol_annual": 5.0,
                "garch": {"alpha": 0.1, "beta": 0.89, "nu": 3.0},
                "jumps": {"rate_per_day": 0.0},
            },
            "depth": {"normal_usd_per_pct": 1.0},
        }
    )
    bound = sc.base_process_bound()
    assert bound.tick_sigma == pytest.approx(sigma_tick) and sigma_tick < MAX_TICK_SIGMA
    assert bound.variance == pytest.approx(n * sigma_tick**2)
    assert bound.log_move == pytest.approx(0.5 * n * sigma_tick**2 + 10 * math.sqrt(n) * sigma_tick)
    assert 22.5 < bound.log_move < MAX_RANDOM_LOG_MOVE
    path = market_path(sc, np.random.default_rng(11), 400)
    assert np.isfinite(path.index).all() and (path.index > 0).all()
    # exp() overflows past 709.8; the largest log move of these paths is far inside it.
    assert np.abs(np.log(path.index / 1e-9)).max() < 100.0


def test_base_process_bound_is_hand_worked():
    # calm (45% vol, 0.75 jumps a day of mean -0.002 and std 0.008) over 30 days:
    # V = 0.45^2 x 30 / 365 = 0.016644; 22.5 jumps; drift = V / 2 + 22.5 x 0.002 = 0.053322;
    # sd = sqrt(V + 22.5 x (0.002^2 + 0.008^2)) = sqrt(0.018174) = 0.134811.
    sc = dataclasses.replace(load_scenario("calm"), horizon_minutes=30 * 1440.0)
    bound = sc.base_process_bound()
    assert bound.max_vol_multiplier == 1.0
    assert bound.variance == pytest.approx(0.2025 * 30 / 365)
    assert bound.jumps == pytest.approx(22.5)
    assert bound.log_move == pytest.approx(0.053322 + 10 * 0.134811, abs=1e-5)


def test_a_year_at_500pct_vol_is_refused_naming_the_budget():
    # V = 5^2 x 1 year = 25, drift 12.5 plus the default jumps (0.5 a day of -0.005, std 0.01:
    # 182.5 jumps, drift 0.9125): 13.4125 + 10 x sqrt(25 + 182.5 x 1.25e-4) = 63.43 > 23.03.
    with pytest.raises(SchemaError) as info:
        scenario_from_dict(
            {
                "name": "x",
                "description": "y",
                "horizon_minutes": 525_600,
                "price": {"initial": 100.0, "vol_annual": 5.0},
                "depth": {"normal_usd_per_pct": 1e8},
            },
            "year.yaml",
        )
    msg = str(info.value)
    assert msg.startswith("year.yaml: price.vol_annual = 5.0: over horizon_minutes=525600 ")
    assert "drift + 10 sd = 63.4, at most ln(1e10) = 23.0" in msg


# ---- sampling refuses a non-finite draw -------------------------------------------------------


def _path(index: np.ndarray) -> MarketPath:
    ones = np.ones_like(index)
    return MarketPath(
        index=index,
        basis=np.zeros_like(index),
        wick=ones,
        depth_mult=ones.copy(),
        frozen=np.zeros(index.shape, dtype=bool),
        manipulation=ones.copy(),
        vol_mult=ones.copy(),
        precursor=np.zeros_like(index),
    )


@pytest.mark.parametrize(
    ("bad", "column", "shown"),
    [(np.inf, "index", "inf"), (np.nan, "index", "nan"), (0.0, "index", "0.0")],
)
def test_check_path_names_scenario_column_tick_and_minute(bad, column, shown):
    sc = dataclasses.replace(load_scenario("calm"), tick_minutes=2.5, horizon_minutes=100.0)
    index = np.full((40, 3), 100.0)
    index[7, 1] = bad
    index[9, 0] = bad  # a later tick: the first one is named
    with pytest.raises(NonFinitePathError) as info:
        check_path(sc, _path(index))
    assert str(info.value) == (
        f"scenario 'calm': {column} = {shown}: finite and > 0; first broken at tick 7 "
        "(minute 17.5) of exchange 1 of the drawn path, so this draw is refused"
    )
    assert isinstance(info.value, SchemaError)  # every command maps it to exit 2


def test_check_path_names_a_non_finite_basis_and_depth():
    sc = load_scenario("calm")
    path = _path(np.full((10, 1), 5.0))
    path.basis[4, 0] = -np.inf
    with pytest.raises(NonFinitePathError, match=r"basis = -inf: finite; first broken at tick 4 "):
        check_path(sc, path)
    path = _path(np.full((10, 1), 5.0))
    path.depth_mult[2, 0] = 0.0
    with pytest.raises(NonFinitePathError, match=r"depth_mult = 0.0: finite and > 0; .* tick 2 "):
        check_path(sc, path)


def test_market_path_refuses_an_overflowing_draw(monkeypatch):
    # A base process that blows up at tick 30 (as fat tails beyond every bound would): the path
    # is refused with the tick, instead of inf reaching the simulator.
    def blown_up(rng, n_ticks, n_paths, *args, **kwargs):
        out = np.zeros((n_ticks, n_paths))
        out[30, :] = 800.0  # exp(800) overflows
        return out

    monkeypatch.setattr(scenarios_module, "garch_t_log_returns", blown_up)
    sc = dataclasses.replace(load_scenario("calm"), horizon_minutes=60.0)
    with pytest.raises(NonFinitePathError, match=r"index = inf: .* tick 30 \(minute 30\)"):
        market_path(sc, np.random.default_rng(0), 2)
    with pytest.raises(NonFinitePathError, match=r"^scenario 'calm': index = inf"):
        sample_market(sc)

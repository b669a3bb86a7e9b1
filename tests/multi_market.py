"""Shared helpers of the multi-market tests (issue 17): scenario files and fuzzed books."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fundgym.envs.core.impact import SqrtImpact, market_books
from fundgym.envs.core.params import RiskParams
from fundgym.envs.market.factor import MarketsPath, draw_markets
from fundgym.envs.resources import SCENARIO_DIR
from fundgym.envs.scenarios import Scenario, scenario_from_dict
from fundgym.envs.schema import SchemaError, load_yaml
from fundgym.envs.state import SimState

FloatArray = np.ndarray[Any, np.dtype[np.float64]]

#: The hand-worked cross-margin cases' terms: flat MMR 5%, IMR 10%, a 1.5% fee, whole closes.
CROSS_PARAMS = RiskParams(
    mmr=0.05,
    imr=0.1,
    liquidation_fee_rate=0.015,
    max_liquidation_fraction=1.0,
    min_liquidation_notional_usd=0.0,
)


def two_market_book(
    rows: list[tuple[float, float, float, float, float]],
    fund_usd: float,
    segments: list[float] | None = None,
) -> SimState:
    """One exchange, two markets: rows of (collateral, size 0, entry 0, size 1, entry 1).

    ``segments``: the cash of segmented funds (then ``fund_usd`` is the shared fund's, 0).
    """
    coll = [[r[0] for r in rows]]
    size = [[[r[1], r[3]] for r in rows]]
    entry = [[[r[2], r[4]] for r in rows]]
    seg = None if segments is None else [segments]
    return SimState.create(coll, size, entry, fund_usd, fund_segments_usd=seg)


#: The ADL rules the fuzzed margin-engine tests draw from.
POLICIES = ("bitmex", "hyperliquid", "drift", "water_filling", "risk_pro_rata")
#: Waterfall orders (``RiskParams.waterfall``) with their fallback, as the fuzz draws them.
SEQUENCES: tuple[tuple[tuple[str, ...] | None, str], ...] = (
    (None, "adl"),
    (("margin", "book", "adl", "fund", "socialize", "exchange"), "adl"),
    (("margin", "book", "fund", "socialize", "exchange"), "socialize"),
    (("margin", "book", "exchange"), "socialize"),
)
#: Three markets' square-root books: BTC's, and 0.3 and 0.05 of it.
FUZZ_BOOKS = market_books(SqrtImpact(2e4), [1.0, 0.3, 0.05])


def fuzz_engine(**extra: Any) -> Any:
    """Hypothesis's ``given`` over a fuzzed engine (seed, ADL rule, socialisation, close
    fraction, waterfall order) and ``extra`` strategies of the test's own."""
    return given(
        seed=st.integers(0, 2**31 - 1),
        policy=st.sampled_from(POLICIES),
        social=st.sampled_from(("profit_haircut", "drift")),
        max_frac=st.sampled_from((0.25, 1.0)),
        sequence=st.sampled_from(SEQUENCES),
        **extra,
    )


def fuzz_params(
    base: RiskParams,
    sequence: tuple[tuple[str, ...] | None, str],
    policy: str,
    social: str,
    max_frac: float,
) -> RiskParams:
    """``base`` with a fuzzed waterfall, ADL rule, socialisation and close fraction."""
    return dataclasses.replace(
        base,
        waterfall=sequence[0],
        fallback=sequence[1],  # type: ignore[arg-type]
        adl_policy=policy,  # type: ignore[arg-type]
        socialization=social,  # type: ignore[arg-type]
        max_liquidation_fraction=max_frac,
        min_liquidation_notional_usd=100.0,
    )


def random_books(seed: int, n_envs: int, n_acc: int, n_mk: int) -> tuple[SimState, FloatArray]:
    """A batch of books near their margin: random sizes, entries, collateral and marks."""
    rng = np.random.default_rng(seed)
    entry = rng.uniform(50.0, 150.0, (n_envs, n_acc, n_mk))
    size = rng.normal(0.0, 10.0, (n_envs, n_acc, n_mk))
    size[rng.random((n_envs, n_acc, n_mk)) < 0.3] = 0.0
    notional = (np.abs(size) * entry).sum(axis=2)
    coll = notional * rng.uniform(0.0, 0.3, (n_envs, n_acc))
    fund = rng.uniform(0.0, 500.0, n_envs)
    marks = entry.mean(axis=1) * rng.uniform(0.7, 1.3, (n_envs, n_mk))
    return SimState.create(coll, np.where(size == 0.0, 0.0, size), entry, fund), marks


def library_dict(name: str) -> dict[str, Any]:
    """A library scenario's file as parsed YAML, to edit before validating."""
    return load_yaml((SCENARIO_DIR / f"{name}.yaml").read_text())


def draw(sc: Scenario, seed: int = 0, n_envs: int = 1) -> MarketsPath:
    """Every market's (and collateral asset's) drawn path, from ``seed``."""
    return draw_markets(sc, np.random.default_rng(seed), n_envs)


def assert_field_error(data: dict[str, Any], field: str, fragment: str) -> None:
    """Validating ``data`` fails naming the file, exactly ``field``, and saying ``fragment``."""
    with pytest.raises(SchemaError) as info:
        scenario_from_dict(data, "multi.yaml")
    assert info.value.source == "multi.yaml"
    assert info.value.path == field, str(info.value)
    assert fragment in str(info.value)


def short_alt_contagion(minutes: float = 120.0) -> Scenario:
    """``alt_contagion`` in ``minutes`` (two hours: 12 decisions), the alt's crash at minute 30.

    The alt's crash and its book's collapse move from minute 600 to 30, so a short episode
    holds them (their legs end at minute 60).
    """
    data = library_dict("alt_contagion")
    data["horizon_minutes"] = minutes
    data["markets"][2]["idio_crash"]["start_minute"] = 30
    data["markets"][2]["depth_collapses"][0]["start_minute"] = 30
    return scenario_from_dict(data, "alt_contagion.yaml")

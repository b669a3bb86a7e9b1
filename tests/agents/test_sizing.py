"""Hand-checked statistics and measurements of fund sizing (agents/evaluate/sizing.py)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from fundgym.agents.evaluate.episodes import run_episodes
from fundgym.agents.evaluate.metrics import EpisodeRecord, var_es
from fundgym.agents.evaluate.sizing import (
    MIN_EPISODES_999,
    Deficits,
    bootstrap_var_es,
    cover2_usd,
    exhaustion_curve,
    few_episodes_message,
    fund_for_target,
    price_moves,
    start_books,
    summarize_group,
    tail_table,
)
from fundgym.agents.policies import parse_spec
from fundgym.agents.rollout import base_env, job_env

#: Standard normal quantiles from published tables (Abramowitz & Stegun 26.2).
Z = {0.9: 1.2815515655446004, 0.95: 1.6448536269514722, 0.99: 2.3263478740408408,
     0.999: 3.090232306167813}  # fmt: skip


def _normal_pdf(z: float) -> float:
    return math.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)


def _normal_cdf(z: float) -> float:
    return 0.5 * math.erfc(-z / math.sqrt(2.0))


# ------------------------------------------------------------------ VaR / ES ----


def test_var_and_es_of_a_lognormal_sample_match_the_exact_quantiles() -> None:
    """LogNormal(0, 1): VaR_q = exp(z_q), ES_q = exp(1/2) Phi(1 - z_q) / (1 - q).

    Tolerances are four standard errors: the sample quantile's sqrt(q (1 - q) / n) / f(x_q)
    (f the lognormal density, phi(z) / x), and ES's sqrt((Var(X | X > v) + q (ES - v)^2) /
    (n (1 - q))) with the tail's variance taken from the sample.
    """
    n = 200_000
    x = np.random.default_rng(20261130).lognormal(0.0, 1.0, n)
    table = tail_table(x, (0.95, 0.99, 0.999), resamples=8)
    for row in table:
        q = row["level"]
        true_var = math.exp(Z[q])
        se_var = math.sqrt(q * (1.0 - q) / n) / (_normal_pdf(Z[q]) / true_var)
        assert abs(row["var"] - true_var) < 4.0 * se_var, (q, row["var"], true_var)
        true_es = math.exp(0.5) * _normal_cdf(1.0 - Z[q]) / (1.0 - q)
        tail = x[x >= row["var"]]
        se_es = math.sqrt((tail.var() + q * (true_es - true_var) ** 2) / (n * (1.0 - q)))
        assert abs(row["es"] - true_es) < 4.0 * se_es, (q, row["es"], true_es)
        assert row["episodes"] == n
        assert row["tail_episodes"] == tail.size


def test_es_of_a_pareto_tail_is_alpha_over_alpha_minus_one_times_var() -> None:
    """Pareto(x_m = 1, alpha = 3): VaR_q = (1 - q)^(-1/3), ES_q = 1.5 VaR_q.

    By hand: q = 0.95, VaR = 20^(1/3) = 2.7144, ES = 4.0716; q = 0.99, VaR = 100^(1/3) =
    4.6416, ES = 6.9624. The tail above v is
    Pareto(v, 3) with variance 0.75 v^2, so ES's standard error is
    v sqrt((0.75 + 0.99 x 0.25) / (n x 0.01)).
    """
    n = 200_000
    x = np.random.default_rng(3).random(n) ** (-1.0 / 3.0)
    by_hand = {0.95: (2.7144, 4.0716), 0.99: (4.6416, 6.9624)}  # 20^(1/3), 100^(1/3); x 1.5
    for q, (true_var, true_es) in by_hand.items():
        var, es = var_es(x, q)
        se_es = true_var * math.sqrt((0.75 + q * 0.25) / (n * (1.0 - q)))
        assert abs(es - true_es) < 4.0 * se_es, (q, es, true_es)
        assert var == pytest.approx(true_var, rel=0.02)


def test_the_bootstrap_computes_var_and_es_exactly_as_var_es_does_with_ties() -> None:
    """One resample, redrawn by hand from the same generator: the same VaR and ES."""
    x = np.array([0.0, 0.0, 0.0, 1.0, 1.0, 2.0, 2.0, 2.0, 5.0, 9.0])
    for seed in range(5):
        ci = bootstrap_var_es(x, (0.5, 0.8, 0.95), resamples=1, seed=seed)
        drawn = x[np.random.default_rng(seed).integers(0, x.size, size=(1, x.size))][0]
        for q in (0.5, 0.8, 0.95):
            var, es = var_es(drawn, q)
            assert ci[q]["var"] == (var, var)
            assert ci[q]["es"][0] == pytest.approx(es, rel=1e-12)


def _coverage(hits: int, reps: int) -> tuple[float, float]:
    """The observed coverage and the binomial standard error of a 95% interval's rate."""
    return hits / reps, math.sqrt(0.95 * 0.05 / reps)


def test_bootstrap_var_intervals_cover_the_truth_at_their_nominal_rate() -> None:
    """400 lognormal samples of 1,000: the 95% interval of VaR90 holds exp(z_0.9) in 95% of
    them, within three binomial standard errors (0.011)."""
    rng = np.random.default_rng(11)
    reps, hits = 400, 0
    truth = math.exp(Z[0.9])
    for r in range(reps):
        low, high = bootstrap_var_es(rng.lognormal(0.0, 1.0, 1000), (0.9,), resamples=200, seed=r)[
            0.9
        ]["var"]
        hits += low <= truth <= high
    rate, se = _coverage(hits, reps)
    assert abs(rate - 0.95) < 3.0 * se, rate


def test_bootstrap_es_intervals_cover_the_truth_near_their_nominal_rate() -> None:
    """400 exponential samples of 1,000: the 95% interval of ES90 holds 1 + ln 10.

    A percentile interval of a tail mean is known to run slightly narrow (the tail mean is
    skewed): over 300 to 600 replications at n = 2,000 it covered 91.5% to 93%. The bound
    allows that 2-point shortfall plus three binomial standard errors, and no more.
    """
    rng = np.random.default_rng(12)
    reps, hits = 400, 0
    truth = 1.0 + math.log(10.0)
    for r in range(reps):
        low, high = bootstrap_var_es(rng.exponential(1.0, 1000), (0.9,), resamples=200, seed=r)[
            0.9
        ]["es"]
        hits += low <= truth <= high
    rate, se = _coverage(hits, reps)
    assert 0.95 - 0.02 - 3.0 * se < rate < 0.95 + 3.0 * se, rate


def test_bootstrap_intervals_are_reproducible_and_hold_the_estimate() -> None:
    x = np.random.default_rng(5).pareto(2.5, 3000)
    a = bootstrap_var_es(x, resamples=300, seed=1)
    assert a == bootstrap_var_es(x, resamples=300, seed=1)
    for q, ci in a.items():
        var, es = var_es(x, q)
        assert ci["var"][0] <= var <= ci["var"][1]
        assert ci["es"][0] <= es <= ci["es"][1]
    with pytest.raises(ValueError, match="resamples"):
        bootstrap_var_es(x, resamples=0)
    with pytest.raises(ValueError, match="finite"):
        bootstrap_var_es([1.0, float("nan")])


# ------------------------------------------------------------------ sizing figures ----


def test_fund_for_target_is_the_smallest_need_at_most_p_of_episodes_exceed() -> None:
    """Ten episodes, needs 0 x 7, 3, 5, 10: p = 0.1 -> 5 (one of ten exceeds it); p = 0.2 ->
    3 (two exceed); p = 0.05 -> 10 (none)."""
    needs = [0, 0, 0, 0, 0, 0, 0, 3, 5, 10]
    assert fund_for_target(needs, 0.1) == 5.0
    assert fund_for_target(needs, 0.2) == 3.0
    assert fund_for_target(needs, 0.05) == 10.0
    with pytest.raises(ValueError, match="target_prob"):
        fund_for_target(needs, 0.0)


def test_exhaustion_curve_counts_needs_above_each_fund_size() -> None:
    """Needs 0, 0, 1, 4: the grid is 0, then 1, 2, 4 (log-spaced from 1 to 4); half the
    episodes need more than 0, one in four more than 1 or 2, none more than 4."""
    curve = exhaustion_curve([0.0, 0.0, 1.0, 4.0], points=4)
    assert curve["fund"] == pytest.approx([0.0, 1.0, 2.0, 4.0])
    assert curve["p"] == [0.5, 0.25, 0.25, 0.0]
    assert curve["p_low"][-1] == 0.0 and all(
        lo <= p <= hi for lo, p, hi in zip(curve["p_low"], curve["p"], curve["p_high"], strict=True)
    )


def test_price_moves_by_hand() -> None:
    """100 -> 120 -> 60 -> 90: the fall from 120 to 60 is 50%, the rise from 60 to 90 50%,
    larger than 100 -> 120 (20%)."""
    fall, rise = price_moves(100.0, np.array([120.0, 60.0, 90.0]))
    assert fall == pytest.approx(0.5)
    assert rise == pytest.approx(0.5)


def test_cover2_by_hand() -> None:
    """A long of 2 at mark 100 with equity 50 loses 80 on a 40% fall: deficit 30. A short of
    1 with equity 20 loses 50 on a 50% rise: deficit 30. Cover-2 = 60. A second book whose
    accounts have the equity to pay needs 0."""
    out = cover2_usd(
        [[2.0, -1.0], [1.0, -1.0]], [[50.0, 20.0], [100.0, 100.0]], [100.0, 100.0], 0.4, 0.5
    )
    assert out.tolist() == pytest.approx([60.0, 0.0])


def test_few_episodes_message_names_the_option_the_value_and_the_minimum() -> None:
    """From 2,000 episodes the 99.9% VaR is the ceil(1998)-th smallest need: it and the two
    above it, the worst 3, are all a 99.9% figure would rest on."""
    message = few_episodes_message(2000, allow_few=False)
    assert message is not None
    assert "--episodes 2,000" in message and f"{MIN_EPISODES_999:,}" in message
    assert "--allow-few-episodes" in message and "worst 3" in message
    assert few_episodes_message(2000, allow_few=True) is None
    assert few_episodes_message(MIN_EPISODES_999, allow_few=False) is None


# ------------------------------------------------------------------ from the simulator ----


@pytest.fixture(scope="module")
def small_run() -> tuple[dict[str, Any], list[EpisodeRecord]]:
    spec = parse_spec("static:binance")
    base = base_env(None, [spec])
    base["n_accounts"] = 64
    kw = job_env(base, spec, "training")
    return kw, run_episodes(spec, kw, 4, 40, "training")


def test_start_books_are_the_two_largest_accounts_of_the_recorded_episodes(
    small_run: tuple[dict[str, Any], list[EpisodeRecord]],
) -> None:
    from fundgym.envs.exchange_env import InsuranceFundVectorEnv

    kw, records = small_run
    books = start_books(dict(kw), 4, 40)
    env = InsuranceFundVectorEnv(num_envs=4, **kw)
    env.reset(seed=40)
    assert env.core.sim is not None
    state = env.core.sim.state
    mark = env.core.last_mark
    for e in range(4):
        size = state.size[e, :, 0]
        largest = np.sort(np.abs(size))[-2:][::-1]
        assert np.abs(books.top_size[e]).tolist() == largest.tolist()
        a = int(np.flatnonzero(size == books.top_size[e, 0])[0])
        equity = state.collateral_usd[e, a] + size[a] * (mark[e] - state.entry_price[e, a, 0])
        assert books.top_equity_usd[e, 0] == pytest.approx(equity)
    d = Deficits.from_records(records, books)
    for i, rec in enumerate(records):
        payout = float(np.sum(rec.shortfall_usd))
        assert d.payout_usd[i] == pytest.approx(payout, abs=1e-6)
        assert d.fund_needed_usd[i] == pytest.approx(
            d.payout_usd[i] + d.socialized_usd[i] + d.adl_haircut_usd[i]
        )
        assert d.fund_needed_frac_oi[i] == pytest.approx(
            d.fund_needed_usd[i] / rec.initial_open_interest_usd
        )
    group = summarize_group(d, 0.25, resamples=50)
    assert group["episodes"] == 4
    cover2 = group["cover2"]
    assert max(cover2["longs_frac_oi"], cover2["shorts_frac_oi"]) <= cover2["frac_oi"]
    assert cover2["frac_oi"] <= cover2["longs_frac_oi"] + cover2["shorts_frac_oi"] + 1e-12
    assert group["fund_for_target"]["frac_oi"] == var_es(d.fund_needed_frac_oi, 0.75)[0]
    with pytest.raises(RuntimeError, match="do not match"):
        Deficits.from_records(records, start_books(dict(kw), 4, 41))

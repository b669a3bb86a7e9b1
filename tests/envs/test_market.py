"""Market parts: fat tails and clustering, jumps, regimes, crash shapes, three prices, funding."""

import numpy as np
import pytest

from fundgym.envs.market.depth import Collapse, depth_multiplier_path, walk_book
from fundgym.envs.market.funding import funding_rate
from fundgym.envs.market.oracle import OracleFeed, mark_price
from fundgym.envs.market.price import (
    CrashLeg,
    crash_log_returns,
    garch_t_log_returns,
    merton_jump_log_returns,
    regime_path,
)
from fundgym.envs.scenarios import load_scenario, market_path, scenario_names


def test_garch_t_has_target_vol_fat_tails_and_clustering():
    rng = np.random.default_rng(0)
    r = garch_t_log_returns(rng, 20_000, 20, 0.5, 1.0, alpha=0.08, beta=0.9, nu=4.0)
    vol = r.std() * np.sqrt(525_600)
    assert 0.4 < vol < 0.6
    z = (r - r.mean()) / r.std()
    assert (z**4).mean() > 4.0  # excess kurtosis: fat tails
    sq = r**2
    lag1 = np.corrcoef(sq[1:].ravel(), sq[:-1].ravel())[0, 1]
    assert lag1 > 0.05  # volatility clustering


def test_garch_rejects_non_stationary_parameters():
    with pytest.raises(ValueError, match="alpha \\+ beta < 1"):
        garch_t_log_returns(np.random.default_rng(0), 10, 1, 0.5, 1.0, alpha=0.5, beta=0.6)


def test_merton_jumps_are_negatively_skewed_at_the_configured_rate():
    rng = np.random.default_rng(1)
    j = merton_jump_log_returns(rng, 1440 * 50, 4, 2.0, -0.01, 0.005, 1.0)
    jumps_per_day = (j != 0).sum() / (50 * 4)
    assert 1.6 < jumps_per_day < 2.4
    assert j[j != 0].mean() == pytest.approx(-0.01, abs=0.002)


def test_regimes_switch_at_the_configured_rates():
    rng = np.random.default_rng(2)
    states = regime_path(rng, 1440 * 20, 8, np.array([[0, 2.0], [6.0, 0]]), 1.0)
    share_volatile = (states == 1).mean()
    assert share_volatile == pytest.approx(2 / 8, abs=0.05)  # stationary: 2 / (2 + 6)


def test_crash_legs_compose_to_their_returns():
    legs = [
        CrashLeg("decline", 60, -0.22),
        CrashLeg("pause", 30),
        CrashLeg("decline", 10, -0.10, "accelerating"),
        CrashLeg("steps", 40, -0.2, n_steps=4),
        CrashLeg("wick", 2, -0.5),
        CrashLeg("recovery", 20, 0.3, "front_loaded"),
    ]
    r = crash_log_returns(legs, 1.0)
    assert r.size == 60 + 30 + 10 + 40 + 2 + 20
    total = np.exp(r.sum())
    assert total == pytest.approx(0.78 * 0.9 * 0.8 * 1.3)
    acc = r[90:100]
    assert abs(acc[-1]) > abs(acc[0])  # accelerating
    assert (r[100:140] != 0).sum() == 4  # four steps
    assert np.exp(r[140]) == pytest.approx(0.5) and np.exp(r[140:142].sum()) == pytest.approx(1)


def test_median_mark_ignores_a_single_venue_wick():
    index = np.array([100.0, 100.0])
    last = np.array([13.0, 100.0])  # -87% print on the venue only
    mark = mark_price(last, index, np.zeros(2))
    np.testing.assert_allclose(mark, [100.0, 100.0])
    np.testing.assert_allclose(mark_price(last, index, np.zeros(2), "last"), last)


def test_oracle_delay_freeze_floor_and_manipulation():
    feed = OracleFeed(1)
    feed.reset_env(0, delay_ticks=2, floor_price=None)
    no = np.zeros(1, dtype=bool)
    one = np.ones(1)
    got = [feed.update(np.array([p]), no, one)[0] for p in (10.0, 11.0, 12.0, 13.0)]
    assert got == [10.0, 10.0, 10.0, 11.0]  # two ticks stale
    assert feed.update(np.array([14.0]), np.ones(1, dtype=bool), one)[0] == 11.0  # frozen
    floored = OracleFeed(1)
    floored.reset_env(0, 0, floor_price=0.107)
    assert floored.update(np.array([0.01]), no, one)[0] == pytest.approx(0.107)
    manip = OracleFeed(1)
    manip.reset_env(0, 0, None)
    assert manip.update(np.array([2.0]), no, np.array([5.0]))[0] == pytest.approx(10.0)


@pytest.mark.parametrize(
    ("mark", "index", "expected"),
    [
        (100.0, 100.0, 0.0001),  # no premium: the interest rate
        (100.03, 100.0, 0.0001),  # premium 0.03% inside the clamp band: still 0.01%
        (100.1, 100.0, 0.0005),  # premium 0.1%: 0.1% + clamp(0.01% - 0.1%) = 0.05%
        (90.0, 100.0, -0.00375),  # -10% discount: capped (BitMEX, 12 Mar 2020)
    ],
)
def test_funding_formula_table(mark, index, expected):
    got = funding_rate(np.array([mark]), np.array([index]))[0]
    assert got == pytest.approx(expected, abs=1e-12)


def test_depth_collapse_ramps_holds_and_recovers():
    m = depth_multiplier_path(200, 1.0, [Collapse(10, 10, 0.05, 20, 30)])
    assert m[9] == 1.0
    assert m[15] == pytest.approx(1 - 0.95 * 0.5)
    assert (m[20:40] == 0.05).all()
    assert m[70] == pytest.approx(1 - 0.95 * 0.5, rel=1e-9)  # one half-life after the hold


def test_liquidation_sells_push_the_price_down():
    # Net 1e6 USD through 1e7 per 1%: 0.01 x sqrt(0.1) = 0.0031623 of log price, either way.
    move = walk_book(
        np.zeros(3), np.array([1e6, 0.0, 3e6]), np.array([0.0, 1e6, 2e6]), np.array([1e7] * 3)
    )
    np.testing.assert_allclose(move, [-0.0031622777, 0.0031622777, -0.0031622777])


def test_oracle_delays_are_per_exchange_and_reset_independently():
    feed = OracleFeed(2)
    feed.reset_env(0, delay_ticks=0, floor_price=None)
    feed.reset_env(1, delay_ticks=3, floor_price=None)
    no, one = np.zeros(2, dtype=bool), np.ones(2)
    out = [feed.update(np.array([p, p]), no, one).copy() for p in (1.0, 2.0, 3.0, 4.0, 5.0)]
    assert [o[0] for o in out] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert [o[1] for o in out] == [1.0, 1.0, 1.0, 1.0, 2.0]
    feed.reset_env(0, delay_ticks=5, floor_price=None)  # grows the ring for exchange 0 only
    nxt = feed.update(np.array([6.0, 6.0]), no, one)
    assert nxt[0] == 6.0 and nxt[1] == 3.0


def test_compiled_prices_equal_the_market_step_for_step():
    # fundgym.envs.market.kernels.prices_one / advance_one on one market's arrays against
    # Market.prices / advance on a twin, over the whole path with random liquidation flow:
    # oracle delay, a freeze, a floor, a manipulation and a venue marking to last, to the bit.
    import dataclasses

    from fundgym.envs.market.kernels import advance_one, prices_one
    from fundgym.envs.market.market import Market
    from fundgym.envs.scenarios import ManipulationSpec, WindowSpec, load_scenario, market_path

    base = load_scenario("oracle_manipulation")
    oracle = dataclasses.replace(
        base.oracle,
        delay_minutes=2.0,
        floor_price=0.036,
        freezes=(WindowSpec(start_minute=30.0, minutes=10.0),),
        manipulations=(ManipulationSpec(start_minute=50.0, minutes=20.0, return_frac=3.0),),
    )
    scenarios = [
        dataclasses.replace(base, oracle=oracle),
        dataclasses.replace(base, venue=dataclasses.replace(base.venue, mark_method="last")),
    ]
    markets = [Market(2), Market(2)]
    for m in markets:
        for e, sc in enumerate(scenarios):
            m.reset_env(e, sc, market_path(sc, np.random.default_rng(e), 1))
    ref, comp = markets
    rng = np.random.default_rng(3)
    n = int(ref.n_ticks.min())
    floored = 0
    for _ in range(n):
        p = ref.prices()
        flows = rng.uniform(0.0, 2e5, (2, 2))
        ref.advance(flows[0], flows[1], p.depth_usd_per_pct)
        for e in range(2):
            got = prices_one(
                e, comp.t[e], comp.path_arrays(), comp.frozen_rows(), comp.scalars,
                comp.mark_last, comp.oracle_index, *comp.oracle.kernel_arrays(),
            )  # fmt: skip
            want = (p.index, p.last, p.mark, p.oracle, p.depth_usd_per_pct, p.funding_rate)
            assert got == tuple(float(w[e]) for w in want)
            advance_one(e, comp.scalars, flows[0, e], flows[1, e], got[4])
            comp.t[e] += 1
            floored += got[3] == 0.036
    np.testing.assert_array_equal(comp.scalars, ref.scalars)
    assert floored > 0


# ---- the path draws, bit for bit -----------------------------------------------------------


def _garch_reference(rng, n_ticks, n_paths, vol_annual, tick_minutes, alpha, beta, nu, mult):
    """The numpy statement of garch_t_log_returns: what its kernel must reproduce to the bit."""
    shape = (n_ticks, n_paths)
    sigma_tick = vol_annual * np.sqrt(tick_minutes / 525_600.0)
    omega = (1.0 - alpha - beta) * (mult * sigma_tick) ** 2
    if np.isinf(nu):
        z = rng.standard_normal(shape)
    else:
        z = rng.standard_t(nu, shape) * np.sqrt((nu - 2.0) / nu)
    out = np.empty(shape)
    for p in range(n_paths):
        var = (mult[0, p] * sigma_tick) ** 2
        prev_r2 = var
        for t in range(n_ticks):
            var = omega[t, p] + alpha * prev_r2 + beta * var
            r = np.sqrt(var) * z[t, p]
            out[t, p] = r
            prev_r2 = r * r
    return out - 0.5 * (mult * sigma_tick) ** 2


def _merton_reference(rng, n_ticks, n_paths, rate_per_day, mean_log, std_log, mult):
    """The numpy statement of merton_jump_log_returns at one-minute ticks."""
    counts = rng.poisson(rate_per_day / 1440.0 * mult, (n_ticks, n_paths))
    z = rng.standard_normal((n_ticks, n_paths))
    return counts * mean_log + np.sqrt(counts) * std_log * z


@pytest.mark.parametrize("name", scenario_names())
def test_path_draws_equal_their_numpy_statement_for_every_shipped_scenario(name):
    # Every shipped scenario's market path comes from default_rng(seed) through these draws:
    # the compiled arithmetic must give numpy's bits, and leave the stream where numpy would.
    sc = load_scenario(name)
    g, j = sc.price.garch, sc.price.jumps
    gbm = sc.price.model == "gbm"
    alpha, beta, nu = (0.0, 0.0, np.inf) if gbm else (g.alpha, g.beta, g.nu)
    n, paths = 300, 3
    for seed in (0, 1, 2027):
        mult = np.random.default_rng(seed + 100).uniform(0.5, 3.0, (n, paths))
        got_rng, want_rng = np.random.default_rng(seed), np.random.default_rng(seed)
        got = garch_t_log_returns(got_rng, n, paths, sc.price.vol_annual, 1.0, alpha=alpha,
                                  beta=beta, nu=nu, vol_multiplier=mult)  # fmt: skip
        want = _garch_reference(want_rng, n, paths, sc.price.vol_annual, 1.0, alpha, beta, nu, mult)
        np.testing.assert_array_equal(got.view(np.int64), want.view(np.int64))
        rate = 50.0 * max(j.rate_per_day, 0.5)  # raised, so a 300-tick draw has jumps
        got = merton_jump_log_returns(got_rng, n, paths, rate, j.mean_log, j.std_log, 1.0,
                                      rate_multiplier=mult)  # fmt: skip
        want = _merton_reference(want_rng, n, paths, rate, j.mean_log, j.std_log, mult)
        assert (want != 0.0).any()
        np.testing.assert_array_equal(got.view(np.int64), want.view(np.int64))
        assert got_rng.random() == want_rng.random()  # the same draws consumed


def test_garch_without_a_multiplier_is_the_multiplier_one():
    a = garch_t_log_returns(np.random.default_rng(5), 50, 2, 0.6, 1.0, nu=5.0)
    b = garch_t_log_returns(np.random.default_rng(5), 50, 2, 0.6, 1.0, nu=5.0,
                            vol_multiplier=np.ones((50, 2)))  # fmt: skip
    np.testing.assert_array_equal(a, b)


# ---- the batch's path store ----------------------------------------------------------------


def test_paths_are_exchange_major_and_padded_with_each_paths_last_value():
    # A batch mixing 40- and 90-tick paths: each exchange reads its own path, then its last
    # value (never frozen) to the end of the store, also after a longer path grew the store;
    # each exchange's path is one contiguous row in memory (what makes its reset cheap).
    from fundgym.envs.market.market import Market
    from fundgym.envs.market.sampler import sample_training_scenario

    short, long_ = (
        sample_training_scenario(np.random.default_rng([s, 1]), horizon_minutes=h)
        for s, h in ((3, 40.0), (4, 90.0))
    )
    market = Market(3)
    drawn = {}
    for e, sc in ((0, short), (2, short), (1, long_), (2, long_)):
        drawn[e] = market_path(sc, np.random.default_rng(10 + e), 1)
        market.reset_env(e, sc, drawn[e])
    for name in ("index", "basis", "depth_mult", "frozen", "precursor"):
        store = market.paths[name]
        assert store.shape == (90, 3)
        assert store.T.flags.c_contiguous
        for e, path in drawn.items():
            col = getattr(path, name)[:, 0]
            n = col.shape[0]
            np.testing.assert_array_equal(store[:n, e], col)
            np.testing.assert_array_equal(store[n:, e], False if name == "frozen" else col[-1])
    assert list(market.n_ticks) == [40, 90, 90]

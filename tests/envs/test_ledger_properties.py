"""Money is conserved: the ledger closes on random books and random paths, crashes included.

collateral + unrealised PnL of all accounts + fund + fee revenue + liquidator rewards +
counterparty PnL - bad debt absorbed by the exchange == initial total + net deposits,
to 1e-9 relative, per exchange, after every step; the fund is never negative, its own
ledger closes, the loss waterfall adds up, and nothing becomes NaN.

Paths mix -99% and +500% ticks, depth near zero, frozen and manipulated oracles (the margin
engine reads a price the book does not trade at), and risk parameters re-drawn every tick.
The batched test runs ``FUNDGYM_LEDGER_PATHS`` paths of 40 ticks (default 10,000: a few
seconds once compiled); a longer run is, e.g.,
``FUNDGYM_LEDGER_PATHS=100000 pytest tests/envs/test_ledger_properties.py -k batched``.
"""

import os

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fundgym.envs.core.impact import SqrtImpact
from fundgym.envs.core.params import ADL_POLICIES, LIQUIDATION_MODES, MarginTiers, RiskParams
from fundgym.envs.core.step import core_step
from fundgym.envs.core.synthetic import synthetic_book
from fundgym.envs.core.trading import deposit, execute_trades
from fundgym.envs.core.vault import (
    V_ACTIVE,
    V_CAPITAL,
    V_CASH,
    V_LOSS_LIMIT_USD,
    V_LOSS_LIMITED,
    V_PEAK,
)
from fundgym.envs.fund.portfolio import receive
from fundgym.envs.state import SimState
from tests.books import assert_books_balance

# Extreme single-step moves are drawn on purpose: -99% and +500%.
RETURNS = st.one_of(
    st.sampled_from([-0.99, -0.5, -0.2, 5.0, 1.0, 0.0]),
    st.floats(-0.3, 0.3, allow_nan=False),
)
SIZES = st.one_of(st.just(0.0), st.floats(-50.0, 50.0, allow_nan=False))
# How the price the margin engine reads relates to the book: the same, frozen at the
# previous tick's mark while the book moves, or pushed 30% off it.
ORACLES = st.sampled_from(["follows", "frozen", "manipulated_up", "manipulated_down"])


def waterfall_variant(variant, fallback, mode):
    """One of four loss sequences, consistent with ``fallback`` and ``mode`` (None: default)."""
    adl = ("adl",) if fallback == "adl" else ()
    if variant == 1 and adl and mode != "dydx_v4":  # ADL before the fund
        return ("margin", "book", "vault", "adl", "fund", "socialize", "exchange")
    if variant == 2:  # no socialisation: the exchange takes the rest
        return ("margin", "book", "vault", "fund", *adl, "exchange")
    if variant == 3:  # no fund in front of ADL and socialisation
        return ("margin", "book", "vault", *adl, "socialize", "exchange")
    return None


@st.composite
def risk_params(draw):
    mmr = draw(st.floats(0.001, 0.3))
    fallback = draw(st.sampled_from(["adl", "socialize"]))
    mode = draw(st.sampled_from(LIQUIDATION_MODES))
    return RiskParams(
        mmr=mmr,
        imr=min(1.0, mmr * draw(st.floats(1.0, 3.0))),
        liquidation_fee_rate=draw(st.floats(0.0, 0.05)),
        liquidation_fee_fund_share=draw(st.floats(0.0, 1.0)),
        taker_fee_rate=draw(st.floats(0.0, 0.002)),
        trading_fee_fund_share=draw(st.floats(0.0, 1.0)),
        max_liquidation_fraction=draw(st.floats(0.05, 1.0)),
        min_liquidation_notional_usd=draw(st.sampled_from([0.0, 1000.0])),
        fallback=fallback,
        tiers=draw(st.sampled_from([None, MarginTiers.binance_btcusdt_2021()])),
        socialization=draw(st.sampled_from(["profit_haircut", "drift"])),
        adl_policy=draw(st.sampled_from(ADL_POLICIES)),
        liquidation_mode=mode,
        liquidator_capacity_mult=draw(st.sampled_from([0.0, 1.0, 50.0])),
        waterfall=waterfall_variant(draw(st.integers(0, 3)), fallback, mode),
    )


@st.composite
def books(draw):
    n = draw(st.integers(1, 12))
    size = np.array(draw(st.lists(SIZES, min_size=n, max_size=n)))
    collateral = np.array(
        draw(st.lists(st.floats(-100.0, 1e6, allow_nan=False), min_size=n, max_size=n))
    )
    entry = np.array(draw(st.lists(st.floats(1.0, 1e5), min_size=n, max_size=n)))
    fund = draw(st.sampled_from([0.0, 10.0, 1e4, 1e7]))
    state = SimState.create(collateral, size, entry, fund)
    vault_usd = draw(st.sampled_from([0.0, 0.0, 10.0, 1e5, 1e8]))
    with_vault(state, np.array([vault_usd]))
    return state, entry


def with_vault(state, capital_usd, loss_frac=None):
    """Give each exchange a backstop vault of ``capital_usd`` (0: none), booked in the ledger.

    ``loss_frac`` ``(E,)``: each vault's loss limit as a share of its capital (NaN: none).
    """
    v = state.vault
    v[:] = 0.0
    v[:, V_CASH] = capital_usd
    v[:, V_CAPITAL] = capital_usd
    v[:, V_PEAK] = capital_usd
    v[:, V_ACTIVE] = (capital_usd > 0.0).astype(float)
    if loss_frac is not None:
        limited = ~np.isnan(loss_frac)
        v[:, V_LOSS_LIMITED] = limited.astype(float)
        v[:, V_LOSS_LIMIT_USD] = np.where(limited, loss_frac, 0.0) * capital_usd
    state.initial_total_usd += capital_usd


def assert_waterfall_adds_up(ev, scale):
    """bad debt = fund + socialised + unrecovered; nothing socialised beyond the loss.

    To 1e-9 of the money in play: ``scale`` (the book) or the bad debt itself, whichever is
    larger. Bad debt is a sum of per-order losses in the kernels' order, its parts sums in
    theirs, so they may differ in the last bit: one ulp of $8.6M is 1.9e-9, which a scale of
    the book alone (a book liquidated to nearly zero collateral) called a leak.
    """
    scale = np.maximum(scale, np.abs(ev.bad_debt_usd))
    covered = ev.shortfall_usd + ev.socialized_loss_usd + ev.unrecovered_usd
    assert np.all(np.abs(ev.bad_debt_usd - covered) <= 1e-9 * scale)
    assert np.all(ev.socialized_loss_usd <= ev.bad_debt_usd - ev.shortfall_usd + 1e-9 * scale)
    assert np.all(ev.unrecovered_usd >= -1e-9 * scale)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    book=books(),
    steps=st.lists(
        st.tuples(RETURNS, risk_params(), st.sampled_from([1e-3, 1e2, 1e5, 1e9]), ORACLES),
        min_size=1,
        max_size=8,
    ),
    trades=st.lists(st.floats(-5.0, 5.0, allow_nan=False), min_size=1, max_size=8),
    top_up=st.floats(-50.0, 500.0, allow_nan=False),
)
def test_ledger_closes_on_random_paths(book, steps, trades, top_up):
    state, entry = book
    book_px = np.array([float(np.median(entry))])
    mark = book_px.copy()
    assert_books_balance(state, mark)
    for k, (r, params, depth, oracle) in enumerate(steps):
        book_px = np.maximum(book_px * (1.0 + r), 1e-6)
        if oracle != "frozen":
            tilt = {"manipulated_up": 1.3, "manipulated_down": 0.7}.get(oracle, 1.0)
            mark = np.maximum(book_px * tilt, 1e-6)
        ev = core_step(state, params, mark, SqrtImpact(depth), book_price=book_px)
        assert_books_balance(state, mark)
        assert_waterfall_adds_up(ev, 1.0 + np.abs(state.collateral_usd).sum())
        if k < len(trades):  # an order from one account, then a deposit by another
            order = np.zeros(state.collateral_usd.shape)
            order[0, k % state.n_accounts] = trades[k]
            result = execute_trades(state, params, order, book_px * 1.001, mark)
            receive(state.fund, result.fund_trading_fee_income_usd)
            cash = np.zeros(state.collateral_usd.shape)
            cash[0, (k + 1) % state.n_accounts] = top_up
            deposit(state, cash)
            assert_books_balance(state, mark)


def test_a_dust_positions_adl_share_that_underflows_keeps_no_part_of_the_quote():
    """Found by the property above (2026-12-02): ADL scaled the batch's totals by its ratio.

    Two bankrupt longs at mark 2.5 (250 x (1 - 0.99)): ``D`` holds 5e-324 units from 1 with
    -1 USD of collateral (bankruptcy value 1 USD), ``L`` 2 units from 250 with nothing
    (bankruptcy value 500). One short ``S`` (1 from 251) is the only counterparty, so half the
    batch is deleveraged (ratio 0.5): ``L`` closes 1 unit at 250. ``D``'s share, 2.5e-324
    units, underflows to 0, so it closes nothing and receives nothing, but the quote was the
    batch's ``501 x 0.5 = 250.5``: ``S`` paid 0.5 USD more than anybody received. The quote
    is now the closes' own values (250): ``S`` ends with 1 USD (251 - 250) and the ledger
    closes.
    """
    coll = np.zeros((1, 3))
    coll[0, 0] = -1.0
    size = np.array([[[5e-324], [2.0], [-1.0]]])
    entry = np.array([[[1.0], [250.0], [251.0]]])
    state = SimState.create(coll, size, entry, 0.0)
    params = RiskParams(
        mmr=0.25, imr=0.25, liquidation_fee_rate=0.0, liquidation_fee_fund_share=0.0,
        taker_fee_rate=0.0, liquidator_capacity_mult=0.0, fallback="adl",
        adl_policy="bitmex",
    )  # fmt: skip
    px = np.maximum(np.array([250.0]) * (1.0 + -0.99), 1e-6)
    ev = core_step(state, params, px, SqrtImpact(1e-3), book_price=px)
    assert ev.adl_volume_usd[0] == 250.0
    assert state.collateral_usd[0, 2] == 1.0 and state.size[0, 2, 0] == 0.0
    assert_books_balance(state, px)


def run_batched_paths(n_paths, seed, n_acc=32, n_steps=40, batch=2000):
    """``n_paths`` fuzzed exchanges (batches of ``batch``), every invariant after every tick.

    Each batch runs one (fallback, socialization, ADL rule) and one liquidation mode, each in
    its own rotation (so over ten batches every mode meets several rules); per exchange and per
    tick the returns are fat-tailed with -99% / +500% shocks, depth is drawn log-uniform
    from 1e-3 (near zero) to 1e7 USD per 1%, the oracle follows, freezes or is manipulated
    30% off the book, and mmr, fees, the fee split and the liquidation fraction and minimum
    are re-drawn, as is the liquidators' capacity multiple; the loss sequence rotates over
    :func:`waterfall_variant`'s four; a third of the exchanges have a
    backstop vault of a drawn size. Returns the number of liquidations seen (a check that
    paths were hard) and how often the vault took over, lost, and liquidators filled.
    """
    rng = np.random.default_rng(seed)
    combos = [("adl", "profit_haircut", policy) for policy in ADL_POLICIES]
    combos += [("socialize", "profit_haircut", "bitmex"), ("socialize", "drift", "bitmex")]
    liquidations = 0
    exercised = dict.fromkeys(
        ("vault_takeovers", "vault_losses", "vault_adl", "liquidator_fills"), 0
    )
    done = 0
    b = 0
    while done < n_paths:
        n_envs = min(batch, n_paths - done)
        fallback, socialization, adl_policy = combos[b % len(combos)]
        mode = LIQUIDATION_MODES[b % len(LIQUIDATION_MODES)]
        b += 1
        drawn = synthetic_book(rng, n_envs, n_acc, 100.0)
        size = drawn.size.copy()
        size[:, :3] = 0.0  # accounts of size zero
        fund = np.where(np.arange(n_envs) < n_envs // 2, 5e4, 0.0)
        state = SimState.create(drawn.collateral_usd, size, drawn.entry_price, fund)
        # A vault behind a third of the exchanges, from a token one to one larger than the book.
        # Half of them with a loss limit of 0-10% of the capital (the Liquidator's ADL).
        vault_usd = np.where(rng.random(n_envs) < 1 / 3, 10.0 ** rng.uniform(0, 6, n_envs), 0.0)
        limit = np.where(rng.random(n_envs) < 0.5, rng.uniform(0.0, 0.1, n_envs), np.nan)
        with_vault(state, vault_usd, limit)
        book_px = np.full(n_envs, 100.0)
        mark = book_px.copy()
        for _ in range(n_steps):
            r = rng.standard_t(3, n_envs) * 0.03
            shock = rng.random(n_envs)
            r = np.where(shock < 0.02, -0.99, np.where(shock > 0.99, 5.0, r))
            book_px = np.maximum(book_px * (1.0 + np.clip(r, -0.99, 5.0)), 1e-6)
            oracle = rng.integers(0, 4, n_envs)  # follows, frozen, manipulated up / down
            target = book_px * np.choose(oracle, [1.0, 1.0, 1.3, 0.7])
            mark = np.maximum(np.where(oracle == 1, mark, target), 1e-6)
            mmr = rng.uniform(0.005, 0.1, n_envs)
            params = RiskParams(
                mmr=mmr,
                imr=np.minimum(1.0, mmr * rng.uniform(1.0, 3.0, n_envs)),
                liquidation_fee_rate=rng.uniform(0.0, 0.05, n_envs),
                liquidation_fee_fund_share=rng.uniform(0.0, 1.0, n_envs),
                taker_fee_rate=rng.uniform(0.0, 0.002, n_envs),
                trading_fee_fund_share=rng.uniform(0.0, 1.0, n_envs),
                max_liquidation_fraction=rng.uniform(0.05, 1.0, n_envs),
                min_liquidation_notional_usd=rng.choice([0.0, 1000.0], n_envs),
                fallback=fallback,
                socialization=socialization,
                adl_policy=adl_policy,
                liquidation_mode=mode,
                liquidator_capacity_mult=rng.choice([0.0, 1.0, 20.0], n_envs),
                waterfall=waterfall_variant(b // 3 % 4, fallback, mode),
            )
            impact = SqrtImpact(10.0 ** rng.uniform(-3.0, 7.0, n_envs))
            ev = core_step(state, params, mark, impact, book_price=book_px)
            liquidations += int(ev.n_liquidations.sum())
            exercised["vault_takeovers"] += int(ev.vault_takeovers.sum())
            exercised["vault_losses"] += int((ev.vault_loss_usd > 0.0).sum())
            exercised["vault_adl"] += int((ev.vault_adl_usd > 0.0).sum())
            exercised["liquidator_fills"] += int((ev.liquidator_absorbed_usd > 0.0).sum())
            assert_books_balance(state, mark)
            scale = 1.0 + np.abs(state.collateral_usd).sum(axis=1)
            assert_waterfall_adds_up(ev, scale)
            assert np.all(np.abs(state.fund.ledger_gap_usd()) <= 1e-9 * scale)
            # Traders keep trading and moving cash: one order and one deposit per exchange.
            order = np.zeros(state.collateral_usd.shape)
            cash = np.zeros(state.collateral_usd.shape)
            rows = np.arange(n_envs)
            order[rows, rng.integers(0, n_acc, n_envs)] = rng.normal(0.0, 20.0, n_envs)
            cash[rows, rng.integers(0, n_acc, n_envs)] = rng.uniform(-50.0, 500.0, n_envs)
            result = execute_trades(state, params, order, book_px * 1.001, mark)
            receive(state.fund, result.fund_trading_fee_income_usd)
            deposit(state, cash)
            assert_books_balance(state, mark)
        done += n_envs
    return liquidations, exercised


def test_ledger_closes_on_thousands_of_batched_crash_paths():
    n_paths = int(os.environ.get("FUNDGYM_LEDGER_PATHS", "10000"))
    liquidations, exercised = run_batched_paths(n_paths, seed=12345, batch=min(n_paths, 1000))
    assert liquidations > n_paths
    print(exercised)
    assert min(exercised.values()) > 0, exercised  # every new stage ran

"""The backstop vault: hand-worked takeovers, unwinding, exhaustion and loss (envs/core/vault.py).

One long of 1 unit, collateral 1,000, entry 10,000; MMR 5% (requirement 5% of notional at
the oracle), liquidation fee 1% with half to the fund, outside liquidators off (the book stage
alone, as tests/envs/test_liquidation_modes.py). The square-root book's depth is chosen so a
flow slips by a round fraction: ``depth_for(flow, slip)`` USD per 1%
(:meth:`SqrtImpact.for_slippage`).
"""

import numpy as np
import pytest

from fundgym.envs.config import make_config
from fundgym.envs.core.adl import ADL_HYPERLIQUID
from fundgym.envs.core.events import EV_VAULT_ADL, N_EVENTS
from fundgym.envs.core.impact import SqrtImpact
from fundgym.envs.core.params import RiskParams
from fundgym.envs.core.step import core_step
from fundgym.envs.core.vault import (
    V_ACTIVE,
    V_CAPITAL,
    V_CASH,
    V_LOSS_LIMIT_USD,
    V_LOSS_LIMITED,
    V_MAX_DRAWDOWN,
    V_PEAK,
    V_SIZE,
    VAULT_UNWIND_DEPTH_FRAC,
    open_vault,
    vault_deleverage,
    vault_loss_frac,
)
from fundgym.envs.schema import SchemaError
from fundgym.envs.simulator import ExchangeSimulator
from fundgym.envs.state import SimState
from tests.books import assert_books_balance, depth_for

APPROX = {"rel": 1e-12, "abs": 1e-9}


def params(mode="hyperliquid", **kw):
    base = dict(
        mmr=0.05,
        imr=0.1,
        liquidation_fee_rate=0.01,
        liquidation_fee_fund_share=0.5,
        liquidator_capacity_mult=0.0,
        liquidation_mode=mode,
    )
    base.update(kw)
    return RiskParams(**base)


def one_long(vault_usd, fund=1000.0, collateral=1000.0, size=1.0):
    s = SimState.create([[collateral]], [[size]], [[10_000.0]], fund)
    v = s.vault
    v[0, V_CASH] = v[0, V_CAPITAL] = v[0, V_PEAK] = vault_usd
    v[0, V_ACTIVE] = 1.0 if vault_usd > 0.0 else 0.0
    s.initial_total_usd += vault_usd
    return s


def step(state, p, mark, depth):
    mark_px = np.array([float(mark)])
    ev = core_step(state, p, mark_px, SqrtImpact(depth))
    assert_books_balance(state, mark_px)
    return ev


def hl_on_10_oct(n_envs, n_accounts, seed, risk=None, **kw):
    """``oct_10_2025`` under Hyperliquid's levers (MM 1.25%, 0.1% fee), no fund, HLP at 2.2%."""
    return ExchangeSimulator(
        _scenario(),
        params(mmr=0.0125, imr=0.025, liquidation_fee_rate=0.001, **(risk or {})),
        n_envs=n_envs,
        n_accounts=n_accounts,
        seed=seed,
        fund_to_oi_frac=0.0,
        vault_to_oi_frac=0.022,
        **kw,
    )


def test_takeover_below_two_thirds_of_mm_then_unwind_over_two_ticks():
    # | tick | oracle | account equity | 2/3 MM | vault                                       |
    # |------|--------|----------------|--------|---------------------------------------------|
    # | 1    | 9,300  | 300            | 310    | takes 1 unit at 9,300 and the 300 of margin |
    # |      |        |                |        | cash 5,000 + 300 - 9,300 = -4,000           |
    # |      |        |                |        | sells 0.25 x 18,600 / 9,300 = 0.5 unit:     |
    # |      |        |                |        | flow 4,650, walk 0.01 sqrt(0.25) = 0.005,   |
    # |      |        |                |        | slip 2/3 (1 - e^-0.005) = 0.332501387%:     |
    # |      |        |                |        | fill 9,300 - 30.922629 = 9,269.077371       |
    # |      |        |                |        | cash -4,000 + 4,634.538685 = 634.538685     |
    # | 2    | 9,300  | (flat)         |        | sells the other 0.5 at 9,269.077371         |
    # |      |        |                |        | cash 5,269.077371: +269.077371              |
    #
    # The vault is margined after the takeover: 5,000 + 300 = 5,300 >= 5% x 9,300 = 465.
    # The fund is untouched: the vault, not the fund, stands behind the account.
    depth = 18_600.0
    half_fill = 0.5 * 9_300.0 * (1.0 - 2.0 / 3.0 * (1.0 - np.exp(-0.005)))  # 4,634.538685
    s = one_long(5_000.0)
    ev = step(s, params(), 9_300, depth)
    assert s.size[0, 0, 0] == 0.0 and s.collateral_usd[0, 0] == 0.0
    assert ev.vault_takeovers[0] == 1
    assert ev.vault_takeover_usd[0] == pytest.approx(9_300.0, **APPROX)
    assert s.vault[0, V_SIZE] == pytest.approx(0.5, **APPROX)
    assert s.vault[0, V_CASH] == pytest.approx(-4_000.0 + half_fill, **APPROX)
    assert s.vault[0, V_CASH] == pytest.approx(634.538685, abs=1e-6)
    assert ev.vault_unwind_usd[0] == pytest.approx(4_650.0, **APPROX)
    assert ev.liquidation_sell_usd[0] == pytest.approx(4_650.0, **APPROX)  # moves the price
    assert s.fund_usd[0] == pytest.approx(1_000.0, **APPROX)
    assert ev.n_liquidations_below_bankruptcy[0] == 0 and ev.bad_debt_usd[0] == 0.0
    assert s.counterparty_size[0, 0] == pytest.approx(-0.5, **APPROX)  # -1 + 0.5 bought

    ev = step(s, params(), 9_300, depth)  # no account left to liquidate: the vault still works
    assert ev.n_liquidations[0] == 0
    assert s.vault[0, V_SIZE] == 0.0
    assert s.vault[0, V_CASH] == pytest.approx(-4_000.0 + 2 * half_fill, **APPROX)
    assert s.vault[0, V_CASH] == pytest.approx(5_269.077371, abs=1e-6)
    # tick 1's equity: 634.538685 + 0.5 x 9,300 = 5,284.538685
    assert s.vault[0, V_PEAK] == pytest.approx(half_fill + 650.0, **APPROX)
    drawdown = 1.0 - (2 * half_fill - 4_000.0) / (half_fill + 650.0)  # 0.0029258
    assert s.vault[0, V_MAX_DRAWDOWN] == pytest.approx(drawdown, **APPROX)


def test_unwind_per_tick_is_a_quarter_of_the_one_percent_depth():
    assert VAULT_UNWIND_DEPTH_FRAC == 0.25  # the tables above assume it


def test_an_exhausted_vault_passes_the_account_to_the_fund():
    # A vault of 100: 100 + 300 = 400 < 465, the margin it would need. Hyperliquid's backstop
    # then falls to the next stage, the fund's takeover (test_liquidation_modes' table): the
    # position closes in the book at 9,300 x 0.999 = 9,290.7 and the fund keeps the surplus
    # over bankruptcy, 290.7.
    s = one_long(100.0)
    ev = step(s, params(), 9_300, depth_for(9_300, 0.001))
    assert ev.vault_takeovers[0] == 0
    assert s.vault[0, V_CASH] == 100.0 and s.vault[0, V_SIZE] == 0.0
    assert s.fund_usd[0] == pytest.approx(1_290.7, **APPROX)


def test_an_account_below_zero_equity_is_not_the_vaults():
    # Oracle 8,900: equity -100. Hyperliquid deleverages negative accounts; the vault takes
    # only accounts it is paid to take. The fund's takeover closes at 8,900 x 0.999 = 8,891.1,
    # 108.9 past bankruptcy, which the fund pays.
    s = one_long(5_000.0)
    ev = step(s, params(), 8_900, depth_for(8_900, 0.001))
    assert ev.vault_takeovers[0] == 0 and s.vault[0, V_CASH] == 5_000.0
    assert ev.shortfall_usd[0] == pytest.approx(108.9, **APPROX)
    assert s.fund_usd[0] == pytest.approx(1_000.0 - 108.9, **APPROX)


def test_a_vault_below_its_margin_unwinds_whole_and_passes_its_loss_to_the_fund():
    # The vault holds 1 unit bought at 9,300 with cash -4,000 (equity 5,300 at 9,300). The
    # oracle falls to 3,000: equity -1,000, below its requirement of 150: it sells everything,
    # 3,000 of flow through a book that slips it 0.1%: 2,997. Cash -4,000 + 2,997 = -1,003: a loss
    # beyond its equity, which the fund (1,000) pays in part; the exchange absorbs 3.
    s = SimState.create([[0.0]], [[0.0]], [[0.0]], 1000.0)
    v = s.vault
    v[0, V_CASH], v[0, V_SIZE] = -4_000.0, 1.0
    v[0, V_CAPITAL] = v[0, V_PEAK] = 5_000.0
    v[0, V_ACTIVE] = 1.0
    s.counterparty_size[0, 0] -= 1.0
    s.counterparty_cash_usd[0] += 9_300.0
    s.initial_total_usd += 5_300.0  # its 5,000 and the 300 of margin it kept
    ev = step(s, params(), 3_000, depth_for(3_000.0, 0.001))
    assert s.vault[0, V_SIZE] == 0.0 and s.vault[0, V_CASH] == 0.0
    assert s.vault[0, V_ACTIVE] == 0.0  # wiped out: it takes nothing more
    assert ev.vault_loss_usd[0] == pytest.approx(1_003.0, **APPROX)
    assert ev.bad_debt_usd[0] == pytest.approx(1_003.0, **APPROX)
    assert ev.shortfall_usd[0] == pytest.approx(1_000.0, **APPROX)
    assert ev.unrecovered_usd[0] == pytest.approx(3.0, **APPROX)
    assert s.fund_usd[0] == pytest.approx(0.0, abs=1e-9)
    assert s.vault[0, V_MAX_DRAWDOWN] == 1.0


def test_the_vault_pays_funding_on_its_inventory():
    # A vault short 2 units pays -2 x 100 x 1% = -2 (receives 2) when longs pay 1%.
    from fundgym.envs.core.trading import apply_funding

    s = SimState.create([[1000.0]], [[2.0]], [[100.0]], 0.0)
    s.vault[0, V_SIZE] = -2.0
    s.vault[0, V_CASH] = 200.0
    s.vault[0, V_ACTIVE] = 1.0
    s.counterparty_size[0, 0] += 2.0
    s.counterparty_cash_usd[0] -= 200.0
    apply_funding(s, np.array([0.01]), np.array([100.0]))
    assert s.vault[0, V_CASH] == pytest.approx(202.0, **APPROX)
    assert_books_balance(s, np.array([100.0]))


def test_a_vault_needs_a_venue_mode():
    with pytest.raises(SchemaError, match="vault_to_oi_frac"):
        make_config(None, vault_to_oi_frac=0.02)
    from fundgym.envs.scenarios import load_scenario

    with pytest.raises(ValueError, match="liquidation_mode 'partial'"):
        ExchangeSimulator(
            load_scenario("volatile"), RiskParams(), n_accounts=16, vault_to_oi_frac=0.02
        )


def test_the_simulator_books_the_vault_at_reset_and_the_ledger_closes():
    # 2.2% of open interest, as static:hyperliquid's HLP; a crash, the ledger checked every tick.
    sim = hl_on_10_oct(2, 256, 3)
    v = sim.state.vault
    np.testing.assert_allclose(v[:, V_CAPITAL], 0.022 * sim.initial_open_interest_usd)
    assert (v[:, V_ACTIVE] == 1.0).all()
    sim.advance(600, check_ledger=True)
    assert sim.max_ledger_error_usd <= 1e-9 * float(sim.state.initial_total_usd.max())


def test_two_threads_run_the_vault_bit_for_bit_as_one():
    def run(threads):
        sim = hl_on_10_oct(3, 128, 5, threads=threads)
        block = sim.advance(400)
        return sim.state.vault.copy(), block.events.copy()

    (v1, e1), (v2, e2) = run(1), run(2)
    np.testing.assert_array_equal(v1, v2)
    np.testing.assert_array_equal(e1, e2)


# ---- the loss limit: Hyperliquid's Liquidator deleveraged beyond its threshold ----


def vault_long_against_shorts(shorts, limit_frac):
    """A vault of capital 10,000 that bought 10 units at 1,000 from ``shorts`` (coll, size).

    Each short opened at 1,000; the vault is their counterparty (the outside counterparty
    holds nothing), its cash 10,000 - 10 x 1,000 = 0, its loss limit ``limit_frac`` of its
    capital (``None``: none).
    """
    coll = [[c for c, _ in shorts]]
    size = [[q for _, q in shorts]]
    s = SimState.create(coll, size, [[1_000.0] * len(shorts)], 0.0)
    held = -sum(q for _, q in shorts)
    s.counterparty_size[0, 0] -= held
    s.counterparty_cash_usd[0] += held * 1_000.0
    open_vault(s.vault, 0, 10_000.0, limit_frac)
    s.vault[0, V_CASH] -= held * 1_000.0
    s.vault[0, V_SIZE] = held
    s.initial_total_usd += 10_000.0
    assert_books_balance(s, np.array([1_000.0]))
    return s


def test_a_vault_beyond_its_loss_limit_is_deleveraged_against_the_winners_at_the_oracle():
    # | oracle | vault equity        | limit: 2% of 10,000   | ADL at the oracle, 950       |
    # |--------|---------------------|-----------------------|------------------------------|
    # | 990    | 0 + 10 x 990 = 9,900| 9,900 >= 9,800: holds | none; it unwinds 25% of the  |
    # |        |                     |                       | book's depth as before       |
    # | 950    | 0 + 10 x 950 = 9,500| 9,500 < 9,800: beyond | its 10 units against the two |
    # |        |                     |                       | shorts (Hyperliquid's queue: |
    # |        |                     |                       | 6 then 4 units)              |
    #
    # After the ADL at 950: the vault's cash 9,500 and no inventory (its equity unchanged at
    # the oracle, 5% below its capital); the shorts realise (1,000 - 950) a unit: 6 x 50 = 300
    # and 4 x 50 = 200. Nothing reaches the book.
    depth = 20_000.0
    hl = params(mmr=0.0125, imr=0.025, adl_policy="hyperliquid")
    s = vault_long_against_shorts([(3_000.0, -6.0), (3_000.0, -4.0)], 0.02)
    assert s.vault[0, V_LOSS_LIMITED] == 1.0 and s.vault[0, V_LOSS_LIMIT_USD] == 200.0
    ev = step(s, hl, 990.0, depth)
    assert ev.vault_adl_usd[0] == 0.0 and ev.vault_unwind_usd[0] > 0.0
    held = s.vault[0, V_SIZE]
    assert held == pytest.approx(10.0 - VAULT_UNWIND_DEPTH_FRAC * depth / 990.0, **APPROX)

    s = vault_long_against_shorts([(3_000.0, -6.0), (3_000.0, -4.0)], 0.02)
    ev = step(s, hl, 950.0, depth)
    assert ev.vault_adl_usd[0] == pytest.approx(9_500.0, **APPROX)
    assert ev.adl_volume_usd[0] == pytest.approx(9_500.0, **APPROX)
    assert ev.vault_unwind_usd[0] == 0.0 and ev.n_liquidations[0] == 0
    assert s.vault[0, V_SIZE] == 0.0
    assert s.vault[0, V_CASH] == pytest.approx(9_500.0, **APPROX)
    np.testing.assert_allclose(s.size[0, :, 0], [0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(s.collateral_usd[0], [3_300.0, 3_200.0], rtol=1e-12)


@pytest.mark.parametrize(
    ("depth", "deleveraged"),
    [(18_600.0, False), (100.0, True)],
)
def test_a_takeover_the_book_cannot_take_is_deleveraged_in_its_check(depth, deleveraged):
    # The first test's takeover (1 unit at 9,300 with 300 of margin) by a loss-limited vault
    # (limit 2% of 5,000 = 100; after the takeover its equity, 5,300, is far above 4,900).
    # Sold at once through the book, the unit would fill at 9,300 (1 - 2/3 (1 - e^-w)) with
    # w = 0.01 sqrt(9,300 / depth):
    #
    # | depth  | w         | fill        | loss against 9,300 | vs the margin 300 | then     |
    # |--------|-----------|-------------|--------------------|-------------------|----------|
    # | 18,600 | 0.0070711 | 9,256.3146  | 43.69              | less: the book    | held and |
    # |        |           |             |                    | can take it       | unwound  |
    # | 100    | 0.0964365 | 8,730.0188  | 569.98             | more: it cannot   | ADL      |
    #
    # The ADL finds no account short, so the unit closes at the oracle against the rest of
    # the venue's short side, the counterparty (short 1): the vault keeps the 300 of margin.
    s = one_long(5_000.0)
    open_vault(s.vault, 0, 5_000.0, 0.02)
    assert s.vault[0, V_LOSS_LIMITED] == 1.0 and s.vault[0, V_LOSS_LIMIT_USD] == 100.0
    w = 0.01 * np.sqrt(9_300.0 / depth)
    fill = 9_300.0 * (1.0 - 2.0 / 3.0 * (1.0 - np.exp(-w)))
    assert 9_300.0 - fill == pytest.approx(43.69 if depth > 1_000.0 else 569.98, abs=0.01)
    ev = step(s, params(adl_policy="hyperliquid"), 9_300, depth)
    assert ev.vault_takeovers[0] == 1
    if deleveraged:
        assert ev.vault_adl_usd[0] == pytest.approx(9_300.0, **APPROX)
        assert ev.vault_unwind_usd[0] == 0.0 and ev.liquidation_sell_usd[0] == 0.0
        assert s.vault[0, V_SIZE] == 0.0
        assert s.vault[0, V_CASH] == pytest.approx(5_300.0, **APPROX)
        assert s.counterparty_size[0, 0] == 0.0  # -1 + 1
        assert s.counterparty_cash_usd[0] == pytest.approx(10_000.0 - 9_300.0, **APPROX)
    else:
        assert ev.vault_adl_usd[0] == 0.0 and ev.vault_unwind_usd[0] > 0.0
        assert s.vault[0, V_SIZE] > 0.0


def test_the_counterparty_absorbs_what_the_accounts_cannot_up_to_its_opposite_side():
    # The loss-limit case below, the vault long 10 at 950: the account short 6 goes first
    # (6 units at 950) and the counterparty, short 4, takes the other 4 at 950.
    hl = params(mmr=0.0125, imr=0.025, adl_policy="hyperliquid")
    s = vault_long_against_shorts([(3_000.0, -6.0)], 0.02)
    s.counterparty_size[0, 0] -= 4.0  # the vault bought its other 4 units from it
    s.counterparty_cash_usd[0] += 4_000.0
    s.vault[0, V_CASH] -= 4_000.0
    s.vault[0, V_SIZE] += 4.0
    assert_books_balance(s, np.array([1_000.0]))
    ev = step(s, hl, 950.0, 20_000.0)
    assert ev.vault_adl_usd[0] == pytest.approx(9_500.0, **APPROX)
    assert s.vault[0, V_SIZE] == 0.0 and ev.vault_unwind_usd[0] == 0.0
    assert s.size[0, 0, 0] == 0.0 and s.counterparty_size[0, 0] == 0.0
    assert s.collateral_usd[0, 0] == pytest.approx(3_300.0, **APPROX)
    assert s.counterparty_cash_usd[0] == pytest.approx(4_000.0 - 3_800.0, **APPROX)

    # | vault | the account (short 6)      | the counterparty (short 4) | left in the vault |
    # |-------|----------------------------|----------------------------|-------------------|
    # | 10    | being liquidated: excluded | 4 at 950: 3,800            | 6, for the book   |
    s = vault_long_against_shorts([(3_000.0, -6.0)], 0.02)
    s.counterparty_size[0, 0] -= 4.0
    s.counterparty_cash_usd[0] += 4_000.0
    s.vault[0, V_CASH] -= 4_000.0
    s.vault[0, V_SIZE] += 4.0
    ev_rows = np.zeros((1, N_EVENTS))
    vault_deleverage(
        s.vault, 0, s.collateral_usd, s.size, s.entry_price, s.counterparty_size,
        s.counterparty_cash_usd, np.array([950.0]), np.array([True]), ADL_HYPERLIQUID,
        ev_rows, np.zeros(1),
    )  # fmt: skip
    assert s.vault[0, V_SIZE] == 6.0 and s.size[0, 0, 0] == -6.0
    assert s.counterparty_size[0, 0] == 0.0
    assert ev_rows[0, EV_VAULT_ADL] == pytest.approx(3_800.0, **APPROX)
    assert_books_balance(s, np.array([950.0]))


def test_without_a_loss_limit_the_vault_keeps_its_inventory_and_unwinds_into_the_book():
    depth = 20_000.0
    hl = params(mmr=0.0125, imr=0.025, adl_policy="hyperliquid")
    s = vault_long_against_shorts([(3_000.0, -6.0), (3_000.0, -4.0)], None)
    ev = step(s, hl, 950.0, depth)
    assert ev.vault_adl_usd[0] == 0.0 and ev.adl_volume_usd[0] == 0.0
    assert s.vault[0, V_SIZE] == pytest.approx(10.0 - VAULT_UNWIND_DEPTH_FRAC * depth / 950.0)
    np.testing.assert_array_equal(s.size[0, :, 0], [-6.0, -4.0])


def test_the_loss_limit_acts_through_adl_and_only_with_adl_a_stage():
    no_adl = params(
        mmr=0.0125,
        imr=0.025,
        adl_policy="hyperliquid",
        waterfall=("margin", "book", "vault", "fund", "socialize", "exchange"),
        fallback="socialize",
    )
    s = vault_long_against_shorts([(3_000.0, -6.0), (3_000.0, -4.0)], 0.02)
    ev = step(s, no_adl, 950.0, 1e6)
    assert ev.vault_adl_usd[0] == 0.0 and ev.vault_unwind_usd[0] > 0.0
    np.testing.assert_array_equal(s.size[0, :, 0], [-6.0, -4.0])


def test_the_loss_limit_is_hyperliquids_own_unless_set():
    assert vault_loss_frac("hyperliquid") == 0.02
    for mode in ("binance", "bitmex", "dydx_v4", "partial"):
        assert vault_loss_frac(mode) is None
    assert vault_loss_frac("binance", 0.1) == 0.1
    assert vault_loss_frac("hyperliquid", float("inf")) is None
    for bad in (-0.1, 1.5, float("nan"), True, "0.1"):
        with pytest.raises(ValueError, match="vault_adl_loss_frac"):
            vault_loss_frac("hyperliquid", bad)
    with pytest.raises(ValueError, match="vault_adl_loss_frac"):
        ExchangeSimulator(_scenario(), vault_adl_loss_frac=2.0)


def _scenario():
    from fundgym.envs.scenarios import load_scenario

    return load_scenario("oct_10_2025")


def test_the_simulator_arms_hyperliquids_vault_with_its_loss_limit_at_reset():
    def vault_row(**kw):
        return hl_on_10_oct(2, 64, 3, **kw).state.vault

    v = vault_row()
    assert (v[:, V_LOSS_LIMITED] == 1.0).all()
    np.testing.assert_allclose(v[:, V_LOSS_LIMIT_USD], 0.02 * v[:, V_CAPITAL])
    v = vault_row(vault_adl_loss_frac=0.1)
    np.testing.assert_allclose(v[:, V_LOSS_LIMIT_USD], 0.1 * v[:, V_CAPITAL])
    assert (vault_row(vault_adl_loss_frac=float("inf"))[:, V_LOSS_LIMITED] == 0.0).all()
    assert (vault_row(risk={"liquidation_mode": "binance"})[:, V_LOSS_LIMITED] == 0.0).all()


def test_on_10_oct_the_loss_limited_vault_is_the_deleveraged_side():
    # Hyperliquid, 10 Oct 2025: 95.1% of the ADL notional came from the vaults' own positions
    # [S77]. Here, one market: without the limit the vault carries its inventory through the
    # cascade and nothing is deleveraged; with it, the vault is deleveraged and loses less.
    def run(frac):
        sim = hl_on_10_oct(4, 256, 0, risk={"adl_policy": "hyperliquid"}, vault_adl_loss_frac=frac)
        res = sim.run()
        assert res.max_ledger_error_usd <= 1e-9 * float(sim.state.initial_total_usd.max())
        tot = res.totals()
        v = sim.state.vault
        m = res.series["oracle_price"][-1]
        pnl = (v[:, V_CASH] + v[:, V_SIZE] * m - v[:, V_CAPITAL]) / v[:, V_CAPITAL]
        return tot["adl_volume_usd"].sum(), tot["vault_adl_usd"].sum(), pnl.mean()

    adl_off, vault_off, pnl_off = run(float("inf"))
    adl_on, vault_on, pnl_on = run(None)
    assert vault_off == 0.0
    assert vault_on > 0.9 * adl_on and adl_on > 10.0 * max(adl_off, 1.0)
    assert pnl_on > pnl_off

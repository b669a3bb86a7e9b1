"""Hand-worked tables for the public formula functions in :mod:`fundgym.envs.mechanics`.

Every expected value below was derived by hand from the exchanges' formulas (the arithmetic is
in the comment on each row), never by calling the functions under test. Conventions: float64,
USD, size signed in base units (positive = long), ``collateral`` is the USD balance including
realised PnL, so dYdX's quote balance is ``collateral - size * entry``.

The dYdX worked cases (reference notes, section 6) use BTC oracle $50,000, MMR 10%, bankruptcy
adjustment 1, spread-to-MMR 0.1 and a 0.5% maximum liquidation fee. With the position entered
at the oracle, quote -$4,501 on +0.1 BTC is collateral -4,501 + 0.1 * 50,000 = $499, and quote
-$5,100 is collateral -$100.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from fundgym.envs import mechanics
from fundgym.envs.core.params import MarginTiers

REL = 1e-12
ABS = 1e-9


def _approx(expected):
    if isinstance(expected, list | tuple | np.ndarray):
        expected = np.asarray(expected, dtype=np.float64)
    return pytest.approx(expected, rel=REL, abs=ABS)


def _plain_rows(table):
    """The argument tuples of a table's rows that carry no marks (no xfail)."""
    return [row.values for row in table if not row.marks]


# --------------------------------------------------------------------------------------------
# liquidation_price: mark m solving c + q (m - e) = mmr |q| m - cum
#   => m = (q e - c - cum) / (q (1 - sign(q) mmr)); NaN for q = 0; clipped at 0 for longs.
# --------------------------------------------------------------------------------------------

# (collateral, size, entry_price, mmr, maintenance_offset_usd, expected)
LIQUIDATION_PRICE_CASES = [
    # (100000 - 10000) / (1 * 0.95) = 1_800_000 / 19
    pytest.param(10_000.0, 1.0, 100_000.0, 0.05, 0.0, 94_736.84210526316, id="long-docstring"),
    # (-100000 - 10000) / (-1 * 1.05) = 110000 / 1.05 = 2_200_000 / 21
    pytest.param(10_000.0, -1.0, 100_000.0, 0.05, 0.0, 104_761.90476190476, id="short-btc"),
    # (100 - 40) / (1 * 0.75) = 80; check: equity 40 - 20 = 20 = 0.25 * 80
    pytest.param(40.0, 1.0, 100.0, 0.25, 0.0, 80.0, id="long-round"),
    # (-100 - 50) / (-1 * 1.25) = 120; check: equity 50 - 20 = 30 = 0.25 * 120
    pytest.param(50.0, -1.0, 100.0, 0.25, 0.0, 120.0, id="short-round"),
    # (0.5 * 40000 - 8000) / (0.5 * 0.8) = 12000 / 0.4 = 30000
    pytest.param(8_000.0, 0.5, 40_000.0, 0.2, 0.0, 30_000.0, id="long-fractional"),
    # (-0.5 * 40000 - 10000) / (-0.5 * 1.2) = 30000 / 0.6 = 50000
    pytest.param(10_000.0, -0.5, 40_000.0, 0.2, 0.0, 50_000.0, id="short-fractional"),
    # Binance bracket mmr 1%, cum 1,250: (10 * 50000 - 50000 - 1250) / (10 * 0.99)
    #   = 448750 / 9.9 = 4_487_500 / 99
    pytest.param(50_000.0, 10.0, 50_000.0, 0.01, 1_250.0, 45_328.28282828283, id="long-tier-cum"),
    # (-10 * 50000 - 50000 - 1250) / (-10 * 1.01) = 551250 / 10.1 = 5_512_500 / 101
    pytest.param(
        50_000.0, -10.0, 50_000.0, 0.01, 1_250.0, 54_579.207920792076, id="short-tier-cum"
    ),
    # over-collateralised long: (100 - 150) / 0.95 < 0, clipped to 0
    pytest.param(150.0, 1.0, 100.0, 0.05, 0.0, 0.0, id="long-clipped-at-zero"),
    # long already below zero equity: (100 + 10) / 0.95 = 2200 / 19 (above entry: liquidatable)
    pytest.param(-10.0, 1.0, 100.0, 0.05, 0.0, 115.78947368421052, id="long-negative-equity"),
    # short already below zero equity: (-100 + 10) / (-1.05) = 90 / 1.05 = 600 / 7
    pytest.param(-10.0, -1.0, 100.0, 0.05, 0.0, 85.71428571428571, id="short-negative-equity"),
    # short beyond rescue, not clipped (only longs are): (-100 + 200) / (-1.05) = -2000 / 21
    pytest.param(-200.0, -1.0, 100.0, 0.05, 0.0, -95.23809523809524, id="short-not-clipped"),
]


@pytest.mark.parametrize(
    ("collateral", "size", "entry_price", "mmr", "offset", "expected"), LIQUIDATION_PRICE_CASES
)
def test_liquidation_price_table(collateral, size, entry_price, mmr, offset, expected):
    got = mechanics.liquidation_price(collateral, size, entry_price, mmr, offset)
    assert got == _approx(expected)


def test_liquidation_price_default_offset_is_zero():
    # (100000 - 10000) / 0.95, same as passing maintenance_offset_usd=0
    assert mechanics.liquidation_price(10_000.0, 1.0, 100_000.0, 0.05) == _approx(
        94_736.84210526316
    )


# --------------------------------------------------------------------------------------------
# liquidation_price_tiered: within bracket k the trigger solves
#   c + q (m - e) = (|q| m mmr_k - cum_k) s,  s = mmr / base_mmr (0.004 for Binance BTCUSDT)
#   => m = (q e - c - cum_k s) / (q (1 - sign(q) mmr_k s)), in the bracket whose notional
#   range holds |q| m. Binance brackets: 0.4% to 50k, 0.5% (cum 50) to 250k, 1% (cum 1,300)
#   to 1M, 2.5% (cum 16,300) to 10M.
# --------------------------------------------------------------------------------------------

BINANCE = MarginTiers.binance_btcusdt_2021()

# (collateral, size, entry_price, mmr, tiers, expected)
LIQUIDATION_PRICE_TIERED_CASES = [
    # the issue's $3M long at 10x: (3e6 - 3e5 - 16,300) / (30 x 0.975) = 2,683,700 / 29.25,
    # notional 2.75M in [1M, 10M)
    pytest.param(300_000.0, 30.0, 100_000.0, 0.004, BINANCE, 91_750.42735042735, id="3m-long"),
    # the mirror short: (-3e6 - 3e5 - 16,300) / (-30 x 1.025) = 3,316,300 / 30.75,
    # notional 3.24M in [1M, 10M)
    pytest.param(300_000.0, -30.0, 100_000.0, 0.004, BINANCE, 107_847.15447154472, id="3m-short"),
    # a small long stays in bracket 0: (10,000 - 1,000) / (0.1 x 0.996) = 9,000 / 0.0996,
    # notional 9,036 < 50k
    pytest.param(1_000.0, 0.1, 100_000.0, 0.004, BINANCE, 90_361.44578313253, id="small-long"),
    # twice the base MMR doubles every rate and offset: (3e6 - 3e5 - 32,600) / (30 x 0.95)
    #   = 2,667,400 / 28.5, notional 2.81M in [1M, 10M)
    pytest.param(300_000.0, 30.0, 100_000.0, 0.008, BINANCE, 93_592.98245614035, id="scaled-table"),
    # on a bracket floor: c 10,200, 1 unit from 60,000; at 50,000 equity 200 = 0.4% x 50k
    #   = 0.5% x 50k - 50, so both brackets give 49,800 / 0.996 = 49,750 / 0.995 = 50,000
    pytest.param(10_200.0, 1.0, 60_000.0, 0.004, BINANCE, 50_000.0, id="on-a-floor"),
    # no tiers: the flat formula, (100,000 - 10,000) / 0.95
    pytest.param(10_000.0, 1.0, 100_000.0, 0.05, None, 94_736.84210526316, id="flat"),
    # over-collateralised long: no positive price triggers it (bracket 0 gives < 0): 0
    pytest.param(200_000.0, 1.0, 100_000.0, 0.004, BINANCE, 0.0, id="long-clipped-at-zero"),
]


@pytest.mark.parametrize(
    ("collateral", "size", "entry_price", "mmr", "tiers", "expected"),
    LIQUIDATION_PRICE_TIERED_CASES,
)
def test_liquidation_price_tiered_table(collateral, size, entry_price, mmr, tiers, expected):
    got = mechanics.liquidation_price_tiered(collateral, size, entry_price, mmr, tiers)
    assert got == _approx(expected)


def test_liquidation_price_tiered_is_vectorised_and_nan_without_a_position():
    rows = [row.values for row in LIQUIDATION_PRICE_TIERED_CASES if row.values[4] is BINANCE]
    c, q, e, mmr, _, expected = (np.array(col) for col in zip(*rows, strict=True))
    got = mechanics.liquidation_price_tiered(
        np.append(c, 1.0), np.append(q, 0.0), np.append(e, 1.0), np.append(mmr, 0.004), BINANCE
    )
    assert got[:-1] == _approx(expected)
    assert math.isnan(got[-1])


# --------------------------------------------------------------------------------------------
# bankruptcy_price = e - c / q; NaN for q = 0.
# --------------------------------------------------------------------------------------------

# (collateral, size, entry_price, expected)
BANKRUPTCY_PRICE_CASES = [
    # reference 6, full close: 50000 - 499 / 0.1 = 45010 (account receives 0.1 * 45010 = 4501)
    pytest.param(499.0, 0.1, 50_000.0, 45_010.0, id="ref-dydx-full-close"),
    # 100000 - 10000 / 1 = 90000
    pytest.param(10_000.0, 1.0, 100_000.0, 90_000.0, id="long"),
    # 100000 - 10000 / (-1) = 110000
    pytest.param(10_000.0, -1.0, 100_000.0, 110_000.0, id="short"),
    # 40000 - 2000 / (-0.5) = 44000
    pytest.param(2_000.0, -0.5, 40_000.0, 44_000.0, id="short-fractional"),
    # over-collateralised long: 100 - 150 / 1 = -50 (can never go bankrupt)
    pytest.param(150.0, 1.0, 100.0, -50.0, id="long-negative-price"),
    # long below zero equity (quote -5100): 50000 - (-100) / 0.1 = 51000
    pytest.param(-100.0, 0.1, 50_000.0, 51_000.0, id="long-negative-equity"),
    # short below zero equity: 50000 - (-100) / (-0.1) = 49000
    pytest.param(-100.0, -0.1, 50_000.0, 49_000.0, id="short-negative-equity"),
    # zero collateral: 3000 - 0 / 2 = 3000
    pytest.param(0.0, 2.0, 3_000.0, 3_000.0, id="zero-collateral"),
]


@pytest.mark.parametrize(("collateral", "size", "entry_price", "expected"), BANKRUPTCY_PRICE_CASES)
def test_bankruptcy_price_table(collateral, size, entry_price, expected):
    assert mechanics.bankruptcy_price(collateral, size, entry_price) == _approx(expected)


# --------------------------------------------------------------------------------------------
# fillable_price (dYdX GetFillablePrice):
#   TNC = c + q (o - e); PMMR = mmr |q| o; ABR = clamp(BA (1 - TNC / PMMR), 0, 1);
#   FP = (q o - ABR * SMMR * PMMR) / q, i.e. o -+ ABR * SMMR * mmr * o for a long / short.
# --------------------------------------------------------------------------------------------

# (collateral, size, entry_price, oracle_price, mmr, ba, smmr, expected)
FILLABLE_PRICE_CASES = [
    # reference 6: TNC 499, PMMR 500, ABR 1 - 499/500 = 0.002; (5000 - 0.002*0.1*500) / 0.1
    pytest.param(499.0, 0.1, 50_000.0, 50_000.0, 0.1, 1.0, 0.1, 49_999.0, id="ref-dydx-long"),
    # mirror short: ABR 0.002; (-5000 - 0.002*0.1*500) / (-0.1) = 50001
    pytest.param(499.0, -0.1, 50_000.0, 50_000.0, 0.1, 1.0, 0.1, 50_001.0, id="short-mirror"),
    # healthy long: TNC 1000 > PMMR 500, ABR clamp(1 - 2) = 0 -> oracle
    pytest.param(1_000.0, 0.1, 50_000.0, 50_000.0, 0.1, 1.0, 0.1, 50_000.0, id="long-healthy"),
    # long below zero equity: TNC -100, ABR clamp(1.2) = 1; 50000 - 1*0.1*0.1*50000 = 49500
    pytest.param(-100.0, 0.1, 50_000.0, 50_000.0, 0.1, 1.0, 0.1, 49_500.0, id="long-neg-equity"),
    # BA 2: ABR 2 * (1 - 400/500) = 0.4; 50000 - 0.4*0.1*0.1*50000 = 49800
    pytest.param(400.0, 0.1, 50_000.0, 50_000.0, 0.1, 2.0, 0.1, 49_800.0, id="long-ba-2"),
    # mainnet SMMR 1.5: TNC 4400 - 2000 = 2400, PMMR 4800, ABR 0.5;
    #   48000 - 0.5*1.5*0.1*48000 = 44400
    pytest.param(4_400.0, 1.0, 50_000.0, 48_000.0, 0.1, 1.0, 1.5, 44_400.0, id="long-mainnet"),
    # short, oracle up: TNC 800 - 2*300 = 200, PMMR 0.05*2*3300 = 330, ABR 13/33;
    #   (-6600 - 13/33*1.5*330) / (-2) = (-6600 - 195) / (-2) = 3397.5
    pytest.param(800.0, -2.0, 3_000.0, 3_300.0, 0.05, 1.0, 1.5, 3_397.5, id="short-mainnet"),
    # short below zero equity: TNC 10 - 20 = -10, ABR 1; 120 + 1*0.1*0.1*120 = 121.2
    pytest.param(10.0, -1.0, 100.0, 120.0, 0.1, 1.0, 0.1, 121.2, id="short-neg-equity"),
    # SMMR 0: no spread, FP = oracle whatever ABR
    pytest.param(499.0, 0.1, 50_000.0, 50_000.0, 0.1, 1.0, 0.0, 50_000.0, id="smmr-zero"),
]


@pytest.mark.parametrize(
    ("collateral", "size", "entry_price", "oracle_price", "mmr", "ba", "smmr", "expected"),
    FILLABLE_PRICE_CASES,
)
def test_fillable_price_table(collateral, size, entry_price, oracle_price, mmr, ba, smmr, expected):
    got = mechanics.fillable_price(collateral, size, entry_price, oracle_price, mmr, ba, smmr)
    assert got == _approx(expected)


# --------------------------------------------------------------------------------------------
# insurance_fund_delta (dYdX GetLiquidationInsuranceFundDelta):
#   p_b = e - c / q; raw = -fs (fp - p_b); delta = min(raw, rate |fs| fp) if raw > 0 else raw.
# Long c 10000, q 1, e 100000 -> p_b 90000; short c 10000, q -1, e 100000 -> p_b 110000.
# --------------------------------------------------------------------------------------------

# (collateral, size, entry_price, fill_size, fill_price, fee_rate, expected)
INSURANCE_FUND_DELTA_CASES = [
    # reference 6: p_b 51000; surplus 0.1 * (56100 - 51000) = 510, cap 0.005 * 5610 = 28.05
    pytest.param(-100.0, 0.1, 50_000.0, -0.1, 56_100.0, 0.005, 28.05, id="ref-dydx-capped"),
    # reference 6 account at its bankruptcy price 45010: 0.1 * (45010 - 45010) = 0
    pytest.param(499.0, 0.1, 50_000.0, -0.1, 45_010.0, 0.005, 0.0, id="ref-at-bankruptcy"),
    # long full close: surplus 1 * (95000 - 90000) = 5000, cap 0.01 * 95000 = 950
    pytest.param(10_000.0, 1.0, 100_000.0, -1.0, 95_000.0, 0.01, 950.0, id="long-rate-cap"),
    # long full close: surplus 1 * (90500 - 90000) = 500 < cap 905 -> 500
    pytest.param(10_000.0, 1.0, 100_000.0, -1.0, 90_500.0, 0.01, 500.0, id="long-surplus"),
    # long partial: surplus 0.25 * 5000 = 1250, cap 0.01 * 0.25 * 95000 = 237.5
    pytest.param(
        10_000.0, 1.0, 100_000.0, -0.25, 95_000.0, 0.01, 237.5, id="long-partial-rate-cap"
    ),
    # long partial: surplus 0.25 * 400 = 100 < cap 0.01 * 0.25 * 90400 = 226 -> 100
    pytest.param(10_000.0, 1.0, 100_000.0, -0.25, 90_400.0, 0.01, 100.0, id="long-partial-surplus"),
    # long worse than bankruptcy: 1 * (88000 - 90000) = -2000, the fund pays 2000
    pytest.param(10_000.0, 1.0, 100_000.0, -1.0, 88_000.0, 0.01, -2_000.0, id="long-shortfall"),
    # long partial worse: 0.5 * (88000 - 90000) = -1000
    pytest.param(
        10_000.0, 1.0, 100_000.0, -0.5, 88_000.0, 0.01, -1_000.0, id="long-partial-shortfall"
    ),
    # short full close (buy): surplus -1 * (105000 - 110000) = 5000, cap 0.01 * 105000 = 1050
    pytest.param(10_000.0, -1.0, 100_000.0, 1.0, 105_000.0, 0.01, 1_050.0, id="short-rate-cap"),
    # short: surplus 110000 - 109500 = 500 < cap 1095 -> 500
    pytest.param(10_000.0, -1.0, 100_000.0, 1.0, 109_500.0, 0.01, 500.0, id="short-surplus"),
    # short partial: surplus 0.4 * 5000 = 2000, cap 0.01 * 0.4 * 105000 = 420
    pytest.param(
        10_000.0, -1.0, 100_000.0, 0.4, 105_000.0, 0.01, 420.0, id="short-partial-rate-cap"
    ),
    # short partial: surplus 0.4 * 1000 = 400 < cap 0.01 * 0.4 * 109000 = 436 -> 400
    pytest.param(
        10_000.0, -1.0, 100_000.0, 0.4, 109_000.0, 0.01, 400.0, id="short-partial-surplus"
    ),
    # short worse than bankruptcy: -1 * (113000 - 110000) = -3000
    pytest.param(10_000.0, -1.0, 100_000.0, 1.0, 113_000.0, 0.01, -3_000.0, id="short-shortfall"),
    # short partial worse: -0.4 * 3000 = -1200
    pytest.param(
        10_000.0, -1.0, 100_000.0, 0.4, 113_000.0, 0.01, -1_200.0, id="short-partial-shortfall"
    ),
    # long below zero equity (p_b 51000) closed at the oracle: 0.1 * (50000 - 51000) = -100
    pytest.param(-100.0, 0.1, 50_000.0, -0.1, 50_000.0, 0.005, -100.0, id="long-neg-equity"),
    # short below zero equity (p_b 49000) bought back at 50000: -0.1 * 1000 = -100
    pytest.param(-100.0, -0.1, 50_000.0, 0.1, 50_000.0, 0.005, -100.0, id="short-neg-equity"),
    # fee rate 0: surplus 5000, cap 0 -> 0
    pytest.param(10_000.0, 1.0, 100_000.0, -1.0, 95_000.0, 0.0, 0.0, id="rate-zero-surplus"),
    # fee rate 0 does not hide a shortfall: -2000
    pytest.param(10_000.0, 1.0, 100_000.0, -1.0, 88_000.0, 0.0, -2_000.0, id="rate-zero-shortfall"),
    # mainnet fee 1.5%: surplus 0.1 * (56100 - 51000) = 510, cap 0.015 * 5610 = 84.15
    pytest.param(-100.0, 0.1, 50_000.0, -0.1, 56_100.0, 0.015, 84.15, id="mainnet-fee"),
    # no fill: 0
    pytest.param(10_000.0, 1.0, 100_000.0, 0.0, 95_000.0, 0.01, 0.0, id="zero-fill"),
]


@pytest.mark.parametrize(
    ("collateral", "size", "entry_price", "fill_size", "fill_price", "fee_rate", "expected"),
    INSURANCE_FUND_DELTA_CASES,
)
def test_insurance_fund_delta_table(
    collateral, size, entry_price, fill_size, fill_price, fee_rate, expected
):
    got = mechanics.insurance_fund_delta(
        collateral, size, entry_price, fill_size, fill_price, fee_rate
    )
    assert got == _approx(expected)


# --------------------------------------------------------------------------------------------
# adl_score (BitMEX): PnL% = q (m - e) / |q e|; equity = c + q (m - e); EffLev = |q| m / equity;
#   score = PnL% * EffLev if PnL% > 0 else PnL% / EffLev; -inf for q = 0 or equity <= 0.
# --------------------------------------------------------------------------------------------

# (collateral, size, entry_price, mark_price, expected)
ADL_SCORE_CASES = [
    # PnL% 10000/100000 = 0.1; equity 20000; EffLev 110000/20000 = 5.5; 0.1 * 5.5
    pytest.param(10_000.0, 1.0, 100_000.0, 110_000.0, 0.55, id="long-profit"),
    # more leverage ranks higher: equity 15000; EffLev 110000/15000 = 22/3; 0.1 * 22/3 = 11/15
    pytest.param(5_000.0, 1.0, 100_000.0, 110_000.0, 0.7333333333333333, id="long-profit-lev"),
    # PnL% -5000/100000 = -0.05; equity 5000; EffLev 95000/5000 = 19; -0.05 / 19 = -1/380
    pytest.param(10_000.0, 1.0, 100_000.0, 95_000.0, -0.002631578947368421, id="long-loss"),
    # PnL% -1*(-10000)/100000 = 0.1; equity 20000; EffLev 90000/20000 = 4.5; 0.1 * 4.5
    pytest.param(10_000.0, -1.0, 100_000.0, 90_000.0, 0.45, id="short-profit"),
    # PnL% -4000/100000 = -0.04; equity 6000; EffLev 104000/6000 = 52/3; -0.04 * 3/52 = -3/1300
    pytest.param(10_000.0, -1.0, 100_000.0, 104_000.0, -0.002307692307692308, id="short-loss"),
    # PnL% 2*300/6000 = 0.1; equity 1800; EffLev 6600/1800 = 11/3; 0.1 * 11/3 = 11/30
    pytest.param(1_200.0, 2.0, 3_000.0, 3_300.0, 0.36666666666666664, id="long-fractional"),
    # breakeven: PnL% 0 -> 0 / EffLev = 0
    pytest.param(10_000.0, 1.0, 100_000.0, 100_000.0, 0.0, id="breakeven"),
    # no position
    pytest.param(10_000.0, 0.0, 100_000.0, 110_000.0, -math.inf, id="zero-size"),
    # underwater (quote -5100): equity -100 + 0.1 * 0 = -100 <= 0
    pytest.param(-100.0, 0.1, 50_000.0, 50_000.0, -math.inf, id="underwater-long"),
    # underwater short: equity -100 - 0.1 * (51000 - 50000) = -200 <= 0
    pytest.param(-100.0, -0.1, 50_000.0, 51_000.0, -math.inf, id="underwater-short"),
    # profitable but underwater: equity -1000 + 5 = -995 <= 0
    pytest.param(-1_000.0, 1.0, 100.0, 105.0, -math.inf, id="profit-but-underwater"),
    # equity exactly 0: 10000 + (90000 - 100000) = 0
    pytest.param(10_000.0, 1.0, 100_000.0, 90_000.0, -math.inf, id="zero-equity"),
]


@pytest.mark.parametrize(
    ("collateral", "size", "entry_price", "mark_price", "expected"), ADL_SCORE_CASES
)
def test_adl_score_table(collateral, size, entry_price, mark_price, expected):
    got = mechanics.adl_score(collateral, size, entry_price, mark_price)
    if math.isinf(expected):
        assert got == expected
    else:
        assert got == _approx(expected)


# --------------------------------------------------------------------------------------------
# auto_deleverage: greedy from the highest score (ties: lower index first), each up to |size|.
# --------------------------------------------------------------------------------------------

# (amount, counterparty_sizes, scores, expected)
AUTO_DELEVERAGE_CASES = [
    # order idx1 (0.5), idx2 (0.3), idx0 (0.1): idx1 closes 2, idx2 the remaining 1
    pytest.param(3.0, [1.0, 2.0, 4.0], [0.1, 0.5, 0.3], [0.0, 2.0, 1.0], id="greedy-order"),
    # signs ignored: same as above
    pytest.param(3.0, [-1.0, -2.0, -4.0], [0.1, 0.5, 0.3], [0.0, 2.0, 1.0], id="signs-ignored"),
    # order idx0, idx1, idx2: idx0 closes 1, idx1 the remaining 2.5 - 1 = 1.5 of 2 (partial)
    pytest.param(2.5, [1.0, 2.0, 3.0], [3.0, 2.0, 1.0], [1.0, 1.5, 0.0], id="partial-last"),
    # 10 > capacity 1 + 2 + 4 = 7: everyone closes in full
    pytest.param(10.0, [1.0, 2.0, 4.0], [0.1, 0.5, 0.3], [1.0, 2.0, 4.0], id="exceeds-capacity"),
    # exactly the capacity 7
    pytest.param(7.0, [1.0, 2.0, 4.0], [0.1, 0.5, 0.3], [1.0, 2.0, 4.0], id="equals-capacity"),
    # all tied: by index, idx0 closes 1, idx1 the remaining 0.5
    pytest.param(1.5, [1.0, 1.0, 1.0], [0.2, 0.2, 0.2], [1.0, 0.5, 0.0], id="all-tied"),
    # idx1 and idx2 tied on top: idx1 first (1), then idx2 0.5; idx0 nothing
    pytest.param(1.5, [1.0, 1.0, 1.0], [0.1, 0.3, 0.3], [0.0, 1.0, 0.5], id="tie-on-top"),
    # -inf ranks last: order idx1 (0), idx2 (-1), idx0 (-inf)
    pytest.param(2.0, [1.0, 1.0, 1.0], [-math.inf, 0.0, -1.0], [0.0, 1.0, 1.0], id="neg-inf-last"),
    # nothing to offset
    pytest.param(0.0, [1.0, 2.0, 4.0], [0.1, 0.5, 0.3], [0.0, 0.0, 0.0], id="zero-amount"),
    # a zero-size counterparty closes nothing: order idx0 (0 of 0), idx1 (1.5 of 2)
    pytest.param(1.5, [0.0, 2.0], [0.9, 0.1], [0.0, 1.5], id="zero-size-counterparty"),
    # batched rows: row 0 as greedy-order; row 1 order idx2 (1), then tie idx0 before idx1:
    #   idx0 closes 2.5 - 1 = 1.5 of 3
    pytest.param(
        [3.0, 2.5],
        [[1.0, 2.0, 4.0], [-3.0, 1.0, 1.0]],
        [[0.1, 0.5, 0.3], [0.0, 0.0, 1.0]],
        [[0.0, 2.0, 1.0], [1.5, 0.0, 1.0]],
        id="batched-2d",
    ),
    # batched, one row over capacity (5 > 1 + 2 = 3), one row empty amount
    pytest.param(
        [5.0, 0.0],
        [[1.0, -2.0], [4.0, 4.0]],
        [[1.0, 2.0], [1.0, 2.0]],
        [[1.0, 2.0], [0.0, 0.0]],
        id="batched-capacity",
    ),
]


@pytest.mark.parametrize(("amount", "sizes", "scores", "expected"), AUTO_DELEVERAGE_CASES)
def test_auto_deleverage_table(amount, sizes, scores, expected):
    got = np.asarray(mechanics.auto_deleverage(amount, sizes, scores))
    assert got.shape == np.shape(sizes)
    assert got == _approx(expected)
    # every row closes min(amount, total |size|), and nobody more than its own |size|
    capacity = np.abs(np.asarray(sizes)).sum(axis=-1)
    assert got.sum(axis=-1) == _approx(np.minimum(amount, capacity))
    assert np.all(got <= np.abs(np.asarray(sizes)))
    assert np.all(got >= 0.0)


# --------------------------------------------------------------------------------------------
# socialized_loss_shares: loss * |size| / sum |size|; zeros where no account has a position.
# --------------------------------------------------------------------------------------------

# (loss, sizes, expected)
SOCIALIZED_LOSS_CASES = [
    # reference 6 (Drift): 100 * 5/10 each
    pytest.param(100.0, [5.0, -5.0], [50.0, 50.0], id="ref-drift-5-long-5-short"),
    # same open interest split over accounts: 100 * [2, 3, 1, 4] / 10; each side bears 50
    pytest.param(
        100.0, [2.0, 3.0, -1.0, -4.0], [20.0, 30.0, 10.0, 40.0], id="drift-split-accounts"
    ),
    # 90 * [1, 2, 0, 6] / 9, signs ignored
    pytest.param(90.0, [1.0, -2.0, 0.0, 6.0], [10.0, 20.0, 0.0, 60.0], id="pro-rata"),
    # 1.2 * [0.5, 1, 1.5] / 3
    pytest.param(1.2, [0.5, -1.0, 1.5], [0.2, 0.4, 0.6], id="fractional"),
    # one account bears everything
    pytest.param(100.0, [-3.0], [100.0], id="single"),
    # no loss
    pytest.param(0.0, [1.0, -2.0], [0.0, 0.0], id="zero-loss"),
    # nobody holds a position: zeros (the caller books the loss elsewhere)
    pytest.param(100.0, [0.0, 0.0], [0.0, 0.0], id="all-zero-sizes"),
    # batched: row 0 as the Drift case; row 1 30 * [1, 2, 3] / 6; row 2 no positions
    pytest.param(
        [100.0, 30.0, 5.0],
        [[5.0, -5.0, 0.0], [1.0, 2.0, -3.0], [0.0, 0.0, 0.0]],
        [[50.0, 50.0, 0.0], [5.0, 10.0, 15.0], [0.0, 0.0, 0.0]],
        id="batched",
    ),
]


@pytest.mark.parametrize(("loss", "sizes", "expected"), SOCIALIZED_LOSS_CASES)
def test_socialized_loss_shares_table(loss, sizes, expected):
    got = np.asarray(mechanics.socialized_loss_shares(loss, sizes))
    assert got.shape == np.shape(sizes)
    assert got == _approx(expected)


# --------------------------------------------------------------------------------------------
# socialized_loss_shares with a convention, equity caps and the dust threshold:
#   drift: loss * |size| / sum |size|;  profit_haircut: min(loss * upnl+ / sum upnl+, upnl+);
#   then each charge <= max(equity, 0); with a mark, |size| x mark < $1 is not billed.
# --------------------------------------------------------------------------------------------

# (loss, sizes, upnl, equity, convention, mark, expected)
SOCIALIZATION_CONVENTION_CASES = [
    # profit haircut: 100 x [300, 100, 0, 0] / 400; the losing and the flat account pay 0
    pytest.param(
        100.0,
        [1.0, -1.0, 2.0, 0.0],
        [300.0, 100.0, -50.0, 0.0],
        None,
        "profit_haircut",
        None,
        [75.0, 25.0, 0.0, 0.0],
        id="haircut-pro-rata",
    ),
    # loss above all profit: 1,000 x [3/4, 1/4] = [750, 250], capped at the PnL [300, 100];
    # the other 600 is unrecovered
    pytest.param(
        1000.0,
        [1.0, -1.0],
        [300.0, 100.0],
        None,
        "profit_haircut",
        None,
        [300.0, 100.0],
        id="haircut-capped-by-pnl",
    ),
    # equity cap: [75, 25] but the first bearer has only 50 of equity
    pytest.param(
        100.0,
        [1.0, -1.0],
        [300.0, 100.0],
        [50.0, 500.0],
        "profit_haircut",
        None,
        [50.0, 25.0],
        id="haircut-capped-by-equity",
    ),
    # a profitable position on an underwater account bears nothing (cap max(-10, 0) = 0)
    pytest.param(
        100.0, [1.0], [200.0], [-10.0], "profit_haircut", None, [0.0], id="haircut-underwater"
    ),
    # drift with caps: 90 x [1, 2, 0, 6] / 9 = [10, 20, 0, 60], first capped at equity 5
    pytest.param(
        90.0,
        [1.0, -2.0, 0.0, 6.0],
        None,
        [5.0, 100.0, 0.0, 100.0],
        "drift",
        None,
        [5.0, 20.0, 0.0, 60.0],
        id="drift-capped-by-equity",
    ),
    # dust: at mark 100 the 0.001 position is worth 0.1 < $1, so 100 x [5, 5] / 10 without it
    pytest.param(
        100.0, [5.0, -5.0, 0.001], None, None, "drift", 100.0, [50.0, 50.0, 0.0], id="drift-dust"
    ),
    # only dust is open: nobody is billed (the old convention charged it all 100)
    pytest.param(100.0, [1e-15], None, [1e6], "drift", 100.0, [0.0], id="drift-only-dust"),
]


@pytest.mark.parametrize(
    ("loss", "sizes", "upnl", "equity", "convention", "mark", "expected"),
    SOCIALIZATION_CONVENTION_CASES,
)
def test_socialized_loss_conventions_table(loss, sizes, upnl, equity, convention, mark, expected):
    got = np.asarray(mechanics.socialized_loss_shares(loss, sizes, upnl, equity, convention, mark))
    assert got == _approx(expected)
    assert got.sum() <= loss


def test_socialized_loss_rejects_an_unknown_convention_and_missing_pnl():
    with pytest.raises(ValueError, match="convention must be one of"):
        mechanics.socialized_loss_shares(1.0, [1.0], convention="bailout")
    with pytest.raises(ValueError, match="upnl_usd is needed"):
        mechanics.socialized_loss_shares(1.0, [1.0], convention="profit_haircut")


# --------------------------------------------------------------------------------------------
# No position: the price functions return NaN.
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("func", "args"),
    [
        pytest.param(mechanics.liquidation_price, (10_000.0, 0.0, 100_000.0, 0.05), id="liq"),
        pytest.param(mechanics.liquidation_price, (0.0, 0.0, 100.0, 0.05, 10.0), id="liq-cum"),
        pytest.param(mechanics.bankruptcy_price, (10_000.0, 0.0, 100_000.0), id="bankruptcy"),
        pytest.param(
            mechanics.fillable_price,
            (499.0, 0.0, 50_000.0, 50_000.0, 0.1, 1.0, 0.1),
            id="fillable",
        ),
    ],
)
def test_zero_size_gives_nan(func, args):
    assert math.isnan(func(*args))


# --------------------------------------------------------------------------------------------
# Vectorisation: one call on stacked table rows equals the row-by-row results (and the table).
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("func", "table"),
    [
        pytest.param(mechanics.liquidation_price, LIQUIDATION_PRICE_CASES, id="liquidation"),
        pytest.param(mechanics.bankruptcy_price, BANKRUPTCY_PRICE_CASES, id="bankruptcy"),
        pytest.param(mechanics.fillable_price, FILLABLE_PRICE_CASES, id="fillable"),
        pytest.param(mechanics.insurance_fund_delta, INSURANCE_FUND_DELTA_CASES, id="if-delta"),
        pytest.param(mechanics.adl_score, ADL_SCORE_CASES, id="adl-score"),
    ],
)
def test_vectorised_equals_row_by_row(func, table):
    rows = _plain_rows(table)
    columns = [np.array(col, dtype=np.float64) for col in zip(*rows, strict=True)]
    inputs, expected = columns[:-1], columns[-1]
    batched = np.asarray(func(*inputs))
    row_by_row = np.array([func(*row[:-1]) for row in rows], dtype=np.float64)
    assert batched.shape == expected.shape
    np.testing.assert_array_equal(batched, row_by_row)
    finite = np.isfinite(expected)
    assert batched[finite] == _approx(expected[finite])
    assert np.array_equal(batched[~finite], expected[~finite])
    # a 2-D batch (two stacked copies) gives the same values in each row
    stacked = np.asarray(func(*[np.stack([col, col]) for col in inputs]))
    np.testing.assert_array_equal(stacked, np.stack([row_by_row, row_by_row]))


def test_vectorised_broadcasts_scalars():
    # sizes [1, -1, 0] against one scalar collateral / entry / mmr:
    #   long (100000 - 10000) / 0.95, short 110000 / 1.05, no position NaN
    got = mechanics.liquidation_price(10_000.0, np.array([1.0, -1.0, 0.0]), 100_000.0, 0.05)
    assert got[:2] == _approx([94_736.84210526316, 104_761.90476190476])
    assert math.isnan(got[2])


def test_vectorised_auto_deleverage_rows_equal_single_calls():
    amounts = np.array([3.0, 2.5, 10.0])
    sizes = np.array([[1.0, 2.0, 4.0], [-3.0, 1.0, 1.0], [1.0, 2.0, 4.0]])
    scores = np.array([[0.1, 0.5, 0.3], [0.0, 0.0, 1.0], [0.1, 0.5, 0.3]])
    batched = np.asarray(mechanics.auto_deleverage(amounts, sizes, scores))
    singles = np.stack(
        [
            np.asarray(mechanics.auto_deleverage(a, s, sc))
            for a, s, sc in zip(amounts, sizes, scores, strict=True)
        ]
    )
    np.testing.assert_array_equal(batched, singles)
    # hand-derived: see greedy-order, batched-2d and exceeds-capacity
    assert batched == _approx([[0.0, 2.0, 1.0], [1.5, 0.0, 1.0], [1.0, 2.0, 4.0]])


def test_vectorised_socialized_loss_rows_equal_single_calls():
    losses = np.array([100.0, 30.0, 5.0])
    sizes = np.array([[5.0, -5.0, 0.0], [1.0, 2.0, -3.0], [0.0, 0.0, 0.0]])
    batched = np.asarray(mechanics.socialized_loss_shares(losses, sizes))
    singles = np.stack(
        [
            np.asarray(mechanics.socialized_loss_shares(lo, s))
            for lo, s in zip(losses, sizes, strict=True)
        ]
    )
    np.testing.assert_array_equal(batched, singles)
    # sums: 100, 30 and 0 (no positions)
    assert batched.sum(axis=-1) == _approx([100.0, 30.0, 0.0])


# --------------------------------------------------------------------------------------------
# Bad input: ValueError naming the argument and the offending value.
# --------------------------------------------------------------------------------------------

_VALID_KWARGS = {
    mechanics.liquidation_price: {
        "collateral": 10_000.0,
        "size": 1.0,
        "entry_price": 100_000.0,
        "mmr": 0.05,
        "maintenance_offset_usd": 0.0,
    },
    mechanics.bankruptcy_price: {"collateral": 10_000.0, "size": 1.0, "entry_price": 100_000.0},
    mechanics.fillable_price: {
        "collateral": 499.0,
        "size": 0.1,
        "entry_price": 50_000.0,
        "oracle_price": 50_000.0,
        "mmr": 0.1,
        "bankruptcy_adjustment": 1.0,
        "spread_to_mmr": 0.1,
    },
    mechanics.insurance_fund_delta: {
        "collateral": -100.0,
        "size": 0.1,
        "entry_price": 50_000.0,
        "fill_size": -0.1,
        "fill_price": 56_100.0,
        "fee_rate": 0.005,
    },
    mechanics.adl_score: {
        "collateral": 10_000.0,
        "size": 1.0,
        "entry_price": 100_000.0,
        "mark_price": 110_000.0,
    },
    mechanics.auto_deleverage: {
        "amount": 3.0,
        "counterparty_sizes": [1.0, 2.0, 4.0],
        "scores": [0.1, 0.5, 0.3],
    },
    mechanics.socialized_loss_shares: {"loss": 100.0, "sizes": [5.0, -5.0]},
}


def _err(name: str, value: str) -> str:
    """Regex for "<name> must ... got <value>" (the value may print as np.float64(...))."""
    return rf"^{re.escape(name)} must .*got (np\.float64\()?{value}"


def _non_finite_cases():
    cases = []
    for func, kwargs in _VALID_KWARGS.items():
        for name, valid in kwargs.items():
            for bad, pattern in ((math.nan, "nan"), (math.inf, "inf"), (-math.inf, "-inf")):
                if name == "scores" and bad == -math.inf:
                    continue  # -inf is an allowed score (not a candidate)
                value = [bad, *valid[1:]] if isinstance(valid, list) else bad
                cases.append(
                    pytest.param(
                        func,
                        {**kwargs, name: value},
                        _err(name, pattern),
                        id=f"{func.__name__}-{name}-{pattern}",
                    )
                )
    return cases


def _valid_with(func, **changes):
    return {**_VALID_KWARGS[func], **changes}


_liq = mechanics.liquidation_price
_fill = mechanics.fillable_price
_ifd = mechanics.insurance_fund_delta

OUT_OF_RANGE_CASES = [
    pytest.param(_liq, _valid_with(_liq, mmr=0.0), _err("mmr", r"0\.0"), id="liq-mmr-0"),
    pytest.param(_liq, _valid_with(_liq, mmr=1.0), _err("mmr", r"1\.0"), id="liq-mmr-1"),
    pytest.param(_liq, _valid_with(_liq, mmr=1.5), _err("mmr", r"1\.5"), id="liq-mmr-1.5"),
    pytest.param(_liq, _valid_with(_liq, mmr=-0.1), _err("mmr", r"-0\.1"), id="liq-mmr-neg"),
    pytest.param(
        _liq,
        _valid_with(_liq, mmr=[0.05, 1.5]),
        _err("mmr", r"1\.5"),
        id="liq-mmr-array",
    ),
    pytest.param(_fill, _valid_with(_fill, mmr=0.0), _err("mmr", r"0\.0"), id="fill-mmr-0"),
    pytest.param(_fill, _valid_with(_fill, mmr=1.0), _err("mmr", r"1\.0"), id="fill-mmr-1"),
    pytest.param(_fill, _valid_with(_fill, mmr=1.5), _err("mmr", r"1\.5"), id="fill-mmr-1.5"),
    pytest.param(
        _fill,
        _valid_with(_fill, bankruptcy_adjustment=0.5),
        _err("bankruptcy_adjustment", r"0\.5"),
        id="fill-ba-0.5",
    ),
    pytest.param(
        _fill,
        _valid_with(_fill, bankruptcy_adjustment=0.999999),
        _err("bankruptcy_adjustment", r"0\.999999"),
        id="fill-ba-just-below-1",
    ),
    pytest.param(
        _fill,
        _valid_with(_fill, spread_to_mmr=-0.1),
        _err("spread_to_mmr", r"-0\.1"),
        id="fill-smmr-neg",
    ),
    pytest.param(
        _fill,
        _valid_with(_fill, oracle_price=0.0),
        _err("oracle_price", r"0\.0"),
        id="fill-oracle-0",
    ),
    pytest.param(
        _ifd, _valid_with(_ifd, fee_rate=-0.005), _err("fee_rate", r"-0\.005"), id="ifd-fee-neg"
    ),
    pytest.param(
        _ifd,
        _valid_with(_ifd, fill_price=-1.0),
        _err("fill_price", r"-1\.0"),
        id="ifd-fill-price-neg",
    ),
    pytest.param(
        _liq,
        _valid_with(_liq, entry_price=0.0),
        _err("entry_price", r"0\.0"),
        id="liq-entry-0",
    ),
    pytest.param(
        mechanics.bankruptcy_price,
        _valid_with(mechanics.bankruptcy_price, entry_price=-5.0),
        _err("entry_price", r"-5\.0"),
        id="bankruptcy-entry-neg",
    ),
    pytest.param(
        mechanics.adl_score,
        _valid_with(mechanics.adl_score, mark_price=0.0),
        _err("mark_price", r"0\.0"),
        id="adl-mark-0",
    ),
    pytest.param(
        mechanics.auto_deleverage,
        _valid_with(mechanics.auto_deleverage, amount=-1.0),
        _err("amount", r"-1\.0"),
        id="adl-amount-neg",
    ),
    pytest.param(
        mechanics.auto_deleverage,
        _valid_with(mechanics.auto_deleverage, scores=[0.1, 0.5]),
        r"^scores must have the shape .*\(2,\)",
        id="adl-scores-shape",
    ),
    pytest.param(
        mechanics.socialized_loss_shares,
        _valid_with(mechanics.socialized_loss_shares, loss=-100.0),
        _err("loss", r"-100\.0"),
        id="loss-neg",
    ),
    pytest.param(
        _liq,
        _valid_with(_liq, collateral="abc"),
        r"^collateral must be numeric, got 'abc'",
        id="liq-collateral-not-numeric",
    ),
    # fill on the wrong side: a buy (+0.1) from a long, a sell (-0.5) from a short
    pytest.param(
        _ifd,
        _valid_with(_ifd, fill_size=0.1),
        r"^fill_size must be opposite .*fill_size=(np\.float64\()?0\.1",
        id="ifd-fill-same-side-long",
    ),
    pytest.param(
        _ifd,
        _valid_with(_ifd, size=-1.0, fill_size=-0.5),
        r"^fill_size must be opposite .*fill_size=(np\.float64\()?-0\.5",
        id="ifd-fill-same-side-short",
    ),
    pytest.param(
        _ifd,
        _valid_with(_ifd, size=0.0, fill_size=-0.1),
        r"^fill_size must be opposite .*fill_size=(np\.float64\()?-0\.1",
        id="ifd-fill-no-position",
    ),
    # fill larger than the position
    pytest.param(
        _ifd,
        _valid_with(_ifd, fill_size=-0.2),
        r"^fill_size must not exceed .*fill_size=(np\.float64\()?-0\.2",
        id="ifd-fill-too-big-long",
    ),
    pytest.param(
        _ifd,
        _valid_with(_ifd, size=-1.0, fill_size=2.0),
        r"^fill_size must not exceed .*fill_size=(np\.float64\()?2\.0",
        id="ifd-fill-too-big-short",
    ),
]


@pytest.mark.parametrize(("func", "kwargs", "match"), _non_finite_cases() + OUT_OF_RANGE_CASES)
def test_bad_input_raises_value_error(func, kwargs, match):
    with pytest.raises(ValueError, match=match):
        func(**kwargs)


def test_valid_kwargs_do_not_raise():
    # the baselines the bad-input cases perturb are themselves valid
    for func, kwargs in _VALID_KWARGS.items():
        func(**kwargs)

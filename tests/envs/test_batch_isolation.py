"""An exchange's money never depends on its siblings in a batch.

The numpy engine kept one running sum of bad debt across every exchange of a batch
(``_group_exclusive_cumsum``): beside a sibling 1e17 times larger, the small exchange's
partial sums were lost in the big one's rounding and its fund paid out more than it held
($1 created beside a 1e17 sibling, $38 beside 1e20). The kernels keep each exchange's sums
in its own scalars; these tests hold exchange ``i`` of a batch equal, bit for bit, to the
same exchange stepped alone, and its ledger closed to 1e-9 of its own scale.
"""

from dataclasses import fields

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fundgym.envs.core.impact import SqrtImpact
from fundgym.envs.core.params import MarginTiers, RiskParams
from fundgym.envs.core.step import core_step
from fundgym.envs.fund.portfolio import FundPortfolio
from fundgym.envs.state import SimState, ledger_error
from tests.books import ledger_scale

ACCOUNT_FIELDS = ("collateral_usd", "collateral_units", "size", "entry_price")


def assert_row_equals(batch, i, one):
    """Every array of exchange ``i`` of ``batch`` equals exchange 0 of ``one``, bit for bit.

    ``batch`` may hold more account slots than ``one`` (padding); those stay empty.
    """
    n = one.n_accounts
    for f in fields(batch):
        b, o = getattr(batch, f.name), getattr(one, f.name)
        if isinstance(b, FundPortfolio):
            for g in fields(b):
                np.testing.assert_array_equal(
                    getattr(b, g.name)[i], getattr(o, g.name)[0], err_msg=f"fund.{g.name}"
                )
        elif f.name in ACCOUNT_FIELDS:
            np.testing.assert_array_equal(b[i, :n], o[0], err_msg=f.name)
        else:
            np.testing.assert_array_equal(b[i], o[0], err_msg=f.name)
    assert not batch.collateral_usd[i, n:].any() and not batch.size[i, n:].any()


def small_book(scale=1.0):
    # Two bankrupt longs (1 unit from 10,000 with 1,000; at 8,800 each fills 208.8 below its
    # bankruptcy price) and a short bystander; the fund holds 150, so it pays the first
    # shortfall in part and the second not at all.
    return (
        np.array([1000.0, 1000.0, 50_000.0]) * scale,
        np.array([1.0, 1.0, -2.0]) * scale,
        np.array([10_000.0] * 3),
        150.0 * scale,
    )


def test_an_exchange_beside_a_1e17_sibling_equals_itself_alone():
    big, small = small_book(1e17), small_book(1.0)
    batch = SimState.create(
        np.stack([big[0], small[0]]),
        np.stack([big[1], small[1]]),
        np.stack([big[2], small[2]]),
        [big[3], small[3]],
    )
    p = RiskParams(
        mmr=0.05,
        imr=0.1,
        max_liquidation_fraction=1.0,
        min_liquidation_notional_usd=0.0,
        fallback="socialize",
    )
    depth = SqrtImpact.for_slippage(17_600.0, 0.001).depth_usd_per_pct  # 0.1% on the small flow
    mark = np.array([8_800.0, 8_800.0])
    ev = core_step(batch, p, mark, SqrtImpact(np.array([depth * 1e17, depth])))
    alone = SimState.create(*small)
    ev1 = core_step(alone, p, mark[1:], SqrtImpact(depth))
    assert_row_equals(batch, 1, alone)
    np.testing.assert_array_equal(ev.data[1], ev1.data[0])
    # The small fund paid exactly what it held, 150, and never more.
    assert ev1.shortfall_usd[0] == 150.0
    assert alone.fund_usd[0] == 0.0
    assert abs(ledger_error(batch, mark)[1]) <= 1e-9 * ledger_scale(batch, mark)[1]


SIZES = st.one_of(st.just(0.0), st.floats(-50.0, 50.0, allow_nan=False))


@st.composite
def exchange(draw):
    """One exchange's book, fund, mark, depth and mmr, at a scale of 10^k, k in [0, 12]."""
    # At most 7 accounts: numpy sums fewer than 8 numbers in order, so the padding that
    # lines exchanges up in a batch cannot change the bits of the state's initial totals.
    n = draw(st.integers(1, 7))
    scale = 10.0 ** draw(st.integers(0, 12))
    size = np.array(draw(st.lists(SIZES, min_size=n, max_size=n))) * scale
    collateral = np.array(
        draw(st.lists(st.floats(-100.0, 1e5, allow_nan=False), min_size=n, max_size=n))
    )
    entry = np.array(draw(st.lists(st.floats(1.0, 1e4), min_size=n, max_size=n)))
    fund = draw(st.sampled_from([0.0, 10.0, 1e4]))
    returns = draw(st.lists(st.sampled_from([-0.99, -0.5, -0.2, 0.1, 5.0]), min_size=3, max_size=3))
    return {
        "collateral": collateral * scale,
        "size": size,
        "entry": entry,
        "fund": fund * scale,
        "mark": float(np.median(entry)) * np.cumprod(1.0 + np.array(returns)),
        "depth": draw(st.sampled_from([1e-3, 1e3, 1e6])) * scale,
        "mmr": draw(st.floats(0.005, 0.2)),
        "frac": draw(st.floats(0.1, 1.0)),
    }


def pad(arrays, width):
    return np.stack([np.pad(a, (0, width - a.size)) for a in arrays])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    books=st.lists(exchange(), min_size=2, max_size=4),
    fallback=st.sampled_from(["adl", "socialize"]),
    socialization=st.sampled_from(["profit_haircut", "drift"]),
    tiered=st.booleans(),
)
def test_each_exchange_of_a_mixed_scale_batch_steps_as_if_alone(
    books, fallback, socialization, tiered
):
    width = max(b["size"].size for b in books)
    batch = SimState.create(
        pad([b["collateral"] for b in books], width),
        pad([b["size"] for b in books], width),
        pad([np.where(b["size"] != 0.0, b["entry"], 1.0) for b in books], width),
        [b["fund"] for b in books],
    )
    alone = [
        SimState.create(
            b["collateral"], b["size"], np.where(b["size"] != 0.0, b["entry"], 1.0), b["fund"]
        )
        for b in books
    ]
    tiers = MarginTiers.binance_btcusdt_2021() if tiered else None

    def params(rows):
        mmr = np.array([books[i]["mmr"] for i in rows])
        return RiskParams(
            mmr=mmr,
            imr=np.minimum(1.0, 2.0 * mmr),
            max_liquidation_fraction=np.array([books[i]["frac"] for i in rows]),
            fallback=fallback,
            socialization=socialization,
            tiers=tiers,
        )

    every = list(range(len(books)))
    for t in range(3):
        mark = np.array([b["mark"][t] for b in books])
        impact = SqrtImpact(np.array([b["depth"] for b in books]))
        ev = core_step(batch, params(every), mark, impact)
        err = np.abs(ledger_error(batch, mark))
        assert np.all(err <= 1e-9 * ledger_scale(batch, mark)), err
        for i, one in enumerate(alone):
            ev1 = core_step(one, params([i]), mark[i : i + 1], SqrtImpact(books[i]["depth"]))
            assert_row_equals(batch, i, one)
            np.testing.assert_array_equal(ev.data[i], ev1.data[0])

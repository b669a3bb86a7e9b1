"""Hand-worked values for the reward terms and the action mapping."""

import dataclasses

import numpy as np
import pytest

from fundgym.envs.controls import PARAMS, Controls, allocation_weights
from fundgym.envs.core.params import RiskParams
from fundgym.envs.rewards import DecisionTotals, RewardWeights, combine, reward_components


def totals(**kw):
    base = dict(
        trading_fees_usd=np.array([500.0]),
        fund_liquidation_fees_usd=np.array([300.0]),
        fund_external_pnl_usd=np.array([200.0]),
        fund_value_usd=np.array([1_000_000.0]),
        socialized_loss_usd=np.array([0.0]),
        unrecovered_usd=np.array([0.0]),
        adl_volume_usd=np.array([0.0]),
        fund_shortfall_usd=np.array([0.0]),
        margin_locked_usd=np.array([3_000_000.0]),
        lost_fee_revenue_usd=np.array([50.0]),
        change=np.array([0.4]),
        years=10.0 / 525_600.0,
    )
    base.update(kw)
    return DecisionTotals(**base)


def test_reward_terms_in_basis_points_of_open_interest():
    # Open interest $100M: 1 bp = $10,000. Ten minutes = 1.9026e-5 years.
    oi = np.array([100e6])
    w = RewardWeights()
    c = reward_components(totals(), oi, w)
    assert c["revenue"][0] == pytest.approx((500 + 300 + 200) / 1e4)  # 0.1 bp
    years = 10.0 / 525_600.0
    assert c["capital_cost"][0] == pytest.approx(1e6 * 0.10 * years / 1e4)
    assert c["margin_cost"][0] == pytest.approx(3e6 * 0.10 * years / 1e4)
    assert c["lost_demand"][0] == pytest.approx(50 / 1e4)
    assert c["solvency"][0] == 0.0
    assert c["change"][0] == 0.4
    r = combine(c, w)[0]
    expected = 0.1 - c["capital_cost"][0] - c["margin_cost"][0] - 0.005 - 0.05 * 0.4
    assert r == pytest.approx(expected)


def test_fund_pnl_is_the_funds_share_of_revenue_with_its_own_extra_weight():
    # The fund earned $200 of the $1,000 revenue (0.02 bp of $100M); at the default extra
    # weight 0 the reward is the same as without the term, at 19 a fund dollar counts 20 times.
    oi = np.array([100e6])
    c = reward_components(totals(), oi, RewardWeights())
    assert c["fund_pnl"][0] == pytest.approx(200 / 1e4)
    base = combine(c, RewardWeights())[0]
    assert combine(c, RewardWeights(fund_pnl=19.0))[0] == pytest.approx(base + 19 * 0.02)
    lost = reward_components(
        totals(fund_external_pnl_usd=np.array([-30_000.0])), oi, RewardWeights()
    )
    # A $30k loss of the fund: -3 bp in revenue, -60 bp in all at weight 19.
    drop = (
        combine(c, RewardWeights(fund_pnl=19.0))[0] - combine(lost, RewardWeights(fund_pnl=19.0))[0]
    )
    assert drop == pytest.approx(20 * (200 + 30_000) / 1e4)


def test_fund_shortfall_is_the_bad_debt_the_fund_paid_with_its_own_weight():
    # The fund paid $45,000 of bad debt on $100M of open interest: 4.5 bp. At the default
    # weight 0 the reward is the same as without the term, to the bit; at 1 it falls by 4.5 bp
    # (a dollar paid out counts like a dollar of fee income lost); at 20 by 90 bp.
    oi = np.array([100e6])
    paid = totals(fund_shortfall_usd=np.array([45_000.0]))
    c = reward_components(paid, oi, RewardWeights())
    assert c["fund_shortfall"][0] == pytest.approx(4.5)
    assert reward_components(totals(), oi, RewardWeights())["fund_shortfall"][0] == 0.0
    base = combine(c, RewardWeights())[0]
    assert base == combine(reward_components(totals(), oi, RewardWeights()), RewardWeights())[0]
    assert combine(c, RewardWeights(fund_shortfall=1.0))[0] == pytest.approx(base - 4.5)
    assert combine(c, RewardWeights(fund_shortfall=20.0))[0] == pytest.approx(base - 90.0)
    # Users' losses are another term: the fund's payout is not in ``solvency`` (the cost).
    assert c["solvency"][0] == 0.0


def test_solvency_counts_uncovered_losses_and_weighted_adl():
    # $20k socialised + $5k unrecovered + $1M deleveraged at weight 0.05 = $75k = 7.5 bp.
    c = reward_components(
        totals(
            socialized_loss_usd=np.array([20_000.0]),
            unrecovered_usd=np.array([5_000.0]),
            adl_volume_usd=np.array([1_000_000.0]),
        ),
        np.array([100e6]),
        RewardWeights(),
    )
    assert c["solvency"][0] == pytest.approx(7.5)


@pytest.mark.parametrize(
    ("name", "position", "value"),
    [
        ("liquidation_fee_rate", -1.0, 0.001),
        ("liquidation_fee_rate", 1.0, 0.03),
        ("liquidation_fee_rate", 0.0, (0.001 * 0.03) ** 0.5),  # log scale: geometric middle
        ("mmr", 0.0, (0.003 * 0.10) ** 0.5),
        ("imr_multiple", 0.0, 2.1),  # linear: (1.2 + 3.0) / 2
        ("liquidation_fee_fund_share", 0.5, 0.75),
    ],
)
def test_action_mapping_table(name, position, value):
    spec = PARAMS[name]
    assert spec.to_value(np.array([position]))[0] == pytest.approx(value)
    assert spec.to_position(value)[()] == pytest.approx(position)


def test_allocation_softmax():
    # logits (1, -1, -1, -1) x sharpness 3: e^3 / (e^3 + 3 e^-3)
    w = allocation_weights(np.array([[1.0, -1.0, -1.0, -1.0]]))[0]
    assert w[0] == pytest.approx(np.exp(3) / (np.exp(3) + 3 * np.exp(-3)))
    assert w.sum() == pytest.approx(1.0)


def test_decreases_apply_at_once_and_raises_join_a_pending_increase():
    # MMR 0.5% sits at position 2 ln(0.005 / 0.003) / ln(0.1 / 0.003) - 1 = -0.709: room for +1
    c = Controls(("mmr",), {"mmr": 0.005}, max_step=0.5, margin_notice_decisions=2, n_envs=1)
    start = c.position["mmr"][0]
    assert start == pytest.approx(2 * np.log(0.005 / 0.003) / np.log(0.1 / 0.003) - 1)
    c.apply(np.array([[1.0]]))  # decision 1: announce +0.5, due at decision 3
    assert c.position["mmr"][0] == start and c.pending["mmr"][0] == pytest.approx(start + 0.5)
    c.apply(np.array([[1.0]]))  # decision 2: raise joins the pending one, clock unchanged
    assert c.pending["mmr"][0] == pytest.approx(start + 1.0)
    c.apply(np.array([[1.0]]))  # decision 3: due: the pending level arrives
    assert c.position["mmr"][0] == pytest.approx(start + 1.0)
    c.apply(np.array([[-1.0]]))  # a cut applies at once, up to max_step
    assert c.position["mmr"][0] == pytest.approx(start + 0.5)


def test_apply_takes_exactly_one_row_per_exchange_in_the_box():
    c = Controls(("mmr", "liquidation_fee_rate", "imr_multiple"), {}, 0.2, 0, n_envs=2)
    before = c.normalised().copy()
    with pytest.raises(ValueError, match=r"shape \(2, 3\) \(exchanges, levers\), got \(3, 2\)"):
        c.apply(np.zeros((3, 2)))  # transposed: same size, would scramble if reshaped
    with pytest.raises(ValueError, match=r"shape \(2, 3\).*got \(6,\)"):
        c.apply(np.zeros(6))
    with pytest.raises(ValueError, match=r"in \[-1, 1\], got 1.5"):
        c.apply(np.array([[0.0, 1.5, 0.0], [0.0, 0.0, 0.0]]))
    with pytest.raises(ValueError, match=r"in \[-1, 1\], got nan"):
        c.apply(np.array([[0.0, np.nan, 0.0], [0.0, 0.0, 0.0]]))
    np.testing.assert_array_equal(c.normalised(), before)  # rejected actions change nothing


@pytest.mark.parametrize("position", [-1.0, -0.3, 0.0, 0.7, 1.0])
def test_the_controls_values_build_valid_parameters_without_checks(position):
    # The environment builds RiskParams.trusted from Controls.values() every decision: at the
    # ends of every action range they must pass the checking constructor, field for field.
    c = Controls(tuple(PARAMS), {}, max_step=2.0, margin_notice_decisions=0, n_envs=3)
    c.apply(np.full((3, len(PARAMS)), position))
    v = c.values()
    names = ("mmr", "imr", "liquidation_fee_rate", "liquidation_fee_fund_share")
    fields = {name: v[name] for name in (*names, "trading_fee_fund_share")}
    checked = RiskParams(**fields, taker_fee_rate=0.0005, fallback="socialize")
    trusted = RiskParams.trusted(**fields, taker_fee_rate=0.0005, fallback="socialize")
    for f in dataclasses.fields(RiskParams):
        np.testing.assert_array_equal(getattr(trusted, f.name), getattr(checked, f.name))
    np.testing.assert_array_equal(trusted.packed(3), checked.packed(3))
    assert (v["imr"] >= v["mmr"]).all()


def test_trusted_parameters_name_an_unknown_field():
    with pytest.raises(TypeError, match="no field 'mmrr'"):
        RiskParams.trusted(mmrr=0.03)

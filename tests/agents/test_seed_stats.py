"""Statistics across training seeds: IQM, bootstrap intervals, probabilities, spread.

The statistics (:mod:`fundgym.agents.evaluate.seeds`) on hand-worked arrays; then a real
2-seed tiny training evaluated end to end, its seeds trained again on Ray (same weights), and
what bad input gets: a directory without seed runs, seeds from different configs, a missing Ray.
"""

import csv
import json
import sys

import numpy as np
import pytest
import torch
import yaml

from fundgym.agents import evaluate as ev
from fundgym.agents.cli import main
from fundgym.agents.evaluate.metrics import EPISODE_COLUMNS
from fundgym.agents.evaluate.seeds import (
    SEED_COLUMNS,
    SEED_METRICS,
    SeedTable,
    iqm,
    probability_exceeds,
    probability_of_improvement,
    seed_rows,
    seed_verdict,
    tables_from_rows,
)
from fundgym.agents.policies import SpecError, parse_spec
from fundgym.agents.policies.registry import parse_specs
from tests.tiny_runs import TINY_TRAIN

# ---- the statistics, by hand ----


def test_iqm_cuts_a_quarter_from_each_end():
    # sorted: 1 2 | 3 4 5 7 | 10 100 -> the middle four
    assert iqm([10, 1, 7, 3, 100, 5, 2, 4]) == pytest.approx((3 + 4 + 5 + 7) / 4)
    # five values: one cut from each end (int(5 / 4) = 1)
    assert iqm([50, 1, 2, 3, -40]) == pytest.approx(2.0)
    # fewer than four: nothing cut, the plain mean
    assert iqm([1.0, 2.0, 9.0]) == pytest.approx(4.0)
    # along the last axis of a 2-d array
    np.testing.assert_allclose(iqm([[1, 2, 3, 100], [0, 0, 4, 4]]), [2.5, 2.0])
    with pytest.raises(ValueError, match="no values"):
        iqm([])


def test_probability_of_improvement_counts_ties_as_one_half():
    # seed 0 [1, 2] vs reference [2, 3]: 1<2, 1<3, 2=2 (1/2), 2<3 -> 3.5 / 4
    # seed 1 [3, 3] vs [2, 3]: 3>2, 3=3 (1/2), 3>2, 3=3 (1/2) -> 1 / 4
    assert probability_of_improvement([[1, 2], [3, 3]], [2, 3]) == pytest.approx(
        (3.5 / 4 + 1 / 4) / 2
    )
    assert probability_of_improvement([[5, 5]], [5, 5]) == 0.5  # all ties: no difference
    assert probability_of_improvement([[0, 0]], [1, 2]) == 1.0
    with pytest.raises(ValueError, match="shapes"):
        probability_of_improvement([[1, 2]], [1, 2, 3])


def test_probability_exceeds_compares_the_same_episode():
    # episode-wise: 0 > 1? no; 6 > 5 yes; 9 > 10 no -> 1/3. Every pair (not paired) would
    # count 6 > 1, 9 > 1, 9 > 5 too: the pairing matters.
    assert probability_exceeds([[0, 6, 9]], [1, 5, 10]) == pytest.approx(1 / 3)
    assert probability_exceeds([[2, 2], [3, 1]], [2, 2]) == pytest.approx((0 + 0.5) / 2)


# A hand-made table: 2 scenarios x 2 seeds x 3 episodes, one reference.
#   a: reference [0, 5, 10]; seed 0 [0, 6, 9], seed 1 [1, 5, 10]
#   b: reference [2, 2, 2];  seed 0 [3, 3, 3], seed 1 [0, 0, 2]
HAND = SeedTable(
    policy="ppo",
    metric="solvency_loss_usd",
    scenarios=("a", "b"),
    seeds=(4, 7),
    values=np.array([[[0, 6, 9], [1, 5, 10]], [[3, 3, 3], [0, 0, 2]]], dtype=float),
    references={"best_static": np.array([[0, 5, 10], [2, 2, 2]], dtype=float)},
)


def pick(rows, scenario, statistic, reference="", seed=""):
    (row,) = [
        r
        for r in rows
        if (r["scenario"], r["statistic"], r["reference"], r["seed"])
        == (scenario, statistic, reference, seed)
    ]
    return row


def test_exceedance_improvement_and_spread_on_a_hand_made_table():
    rows = seed_rows(HAND, reps=200)
    assert all(list(r) == list(SEED_COLUMNS) for r in rows)
    ref = "best_static"
    # exceeds, episode by episode: a: seed 4 one of 3 (6 > 5), seed 7 one of 3 (1 > 0) -> 1/3
    # b: seed 4 all 3, seed 7 none -> 1/2; over all: the mean of the scenarios, 5/12
    assert pick(rows, "a", "probability_exceeds", ref)["value"] == pytest.approx(1 / 3)
    assert pick(rows, "b", "probability_exceeds", ref)["value"] == pytest.approx(1 / 2)
    assert pick(rows, "ALL", "probability_exceeds", ref)["value"] == pytest.approx(5 / 12)
    # improvement on b: seed 4 loses every pair (0); seed 7: six pairs 0 < 2, three ties 2 = 2
    # -> (6 + 1.5) / 9; the mean over seeds
    assert pick(rows, "b", "probability_of_improvement", ref)["value"] == pytest.approx(7.5 / 9 / 2)
    # seed means: a: 5, 16/3; b: 3, 2/3. Two seeds: the IQM is their mean.
    assert pick(rows, "a", "seed_mean", seed=7)["value"] == pytest.approx(16 / 3)
    assert pick(rows, "b", "iqm")["value"] == pytest.approx((3 + 2 / 3) / 2)
    # over all, a seed's score is its mean over scenarios: seed 4 (5 + 3) / 2 = 4
    assert pick(rows, "ALL", "seed_mean", seed=4)["value"] == pytest.approx(4.0)
    assert pick(rows, "ALL", "seed_mean", seed=7)["value"] == pytest.approx((16 / 3 + 2 / 3) / 2)
    assert pick(rows, "ALL", "seed_min")["value"] == pytest.approx(3.0)
    assert pick(rows, "ALL", "seed_max")["value"] == pytest.approx(4.0)
    # the worst seed on b is seed 4 (mean 3) against a reference mean of 2: worse
    assert pick(rows, "b", "worst_seed", seed=4)["value"] == pytest.approx(3.0)
    assert pick(rows, "b", "reference_mean", ref)["value"] == pytest.approx(2.0)
    assert pick(rows, "b", "worst_seed_no_worse", ref)["value"] == 0.0
    # on a, the worst seed (7, 16/3) is above the reference's 5 as well; over all 4 vs 3.5
    assert pick(rows, "ALL", "worst_seed_no_worse", ref)["value"] == 0.0
    # every row says how many seeds and episodes it stands on
    assert pick(rows, "a", "iqm")["episodes"] == 3 and pick(rows, "ALL", "iqm")["episodes"] == 6
    assert {r["seeds"] for r in rows} == {2}


def test_seed_ratio_is_each_seeds_loss_over_the_references_with_a_paired_interval():
    rows = seed_rows(HAND, reps=300)
    ref = "best_static"
    # a: seed 4 mean 5 over the reference's 5 = 1; seed 7 16/3 over 5. b: seed 4 3 / 2 = 1.5,
    # seed 7 (2/3) / 2 = 1/3. Over all: the seeds' means over scenarios over the reference's,
    # 4 / 3.5 and (16/3 + 2/3) / 2 / 3.5 = 3 / 3.5.
    assert pick(rows, "a", "seed_ratio", ref, 4)["value"] == pytest.approx(1.0)
    assert pick(rows, "a", "seed_ratio", ref, 7)["value"] == pytest.approx(16 / 15)
    assert pick(rows, "b", "seed_ratio", ref, 4)["value"] == pytest.approx(1.5)
    assert pick(rows, "b", "seed_ratio", ref, 7)["value"] == pytest.approx(1 / 3)
    assert pick(rows, "ALL", "seed_ratio", ref, 4)["value"] == pytest.approx(4 / 3.5)
    assert pick(rows, "ALL", "seed_ratio", ref, 7)["value"] == pytest.approx(3 / 3.5)
    # Paired: on b the reference is 2 on every episode and seed 4 is 3, so every resample of
    # the episodes gives 3 / 2: the interval is the point. Unpaired it would not be.
    b4 = pick(rows, "b", "seed_ratio", ref, 4)
    assert b4["ci_low"] == pytest.approx(1.5) and b4["ci_high"] == pytest.approx(1.5)
    for scenario in ("a", "b", "ALL"):
        for sd in (4, 7):
            r = pick(rows, scenario, "seed_ratio", ref, sd)
            assert r["ci_low"] <= r["value"] <= r["ci_high"]


def test_seed_ratio_is_left_out_where_the_reference_lost_nothing():
    zero = SeedTable(
        "ppo", "solvency_loss_usd", ("calm", "crash"), (0, 1),
        np.array([[[0.0, 1.0], [0.0, 0.0]], [[4.0, 2.0], [3.0, 3.0]]]),
        {"best_static": np.array([[0.0, 0.0], [0.0, 6.0]])},
    )  # fmt: skip
    rows = seed_rows(zero, reps=400, seed=1)
    assert not [r for r in rows if r["scenario"] == "calm" and r["statistic"] == "seed_ratio"]
    # crash: reference mean 3; seed 0 mean 3 -> 1, seed 1 mean 3 -> 1. A resample drawing the
    # first episode twice gives the reference 0 and no ratio (4/0, 3/0): it is left out; the
    # others give 2/6 or 1 (seed 0) and 3/6 or 1 (seed 1).
    for sd, low in ((0, 2 / 6), (1, 3 / 6)):
        r = pick(rows, "crash", "seed_ratio", "best_static", sd)
        assert r["value"] == pytest.approx(1.0)
        assert r["ci_low"] == pytest.approx(low) and r["ci_high"] == pytest.approx(1.0)


def test_bootstrap_intervals_are_reproducible_and_contain_the_estimate():
    rng = np.random.default_rng(3)
    values = rng.gamma(2.0, 50.0, size=(3, 5, 8))  # 3 scenarios x 5 seeds x 8 episodes
    table = SeedTable(
        "ppo", "solvency_loss_usd", ("a", "b", "c"), (0, 1, 2, 3, 4), values,
        {"best_static": rng.gamma(2.0, 60.0, size=(3, 8))},
    )  # fmt: skip
    first, again = seed_rows(table, reps=300, seed=11), seed_rows(table, reps=300, seed=11)
    assert first == again
    other = seed_rows(table, reps=300, seed=12)
    assert pick(other, "ALL", "iqm")["ci_low"] != pick(first, "ALL", "iqm")["ci_low"]
    for scenario in ("a", "b", "c", "ALL"):
        q = pick(first, scenario, "iqm")
        means = values.mean(axis=2)
        expected = iqm(
            means[("a", "b", "c").index(scenario)] if scenario != "ALL" else means.mean(0)
        )
        assert q["value"] == pytest.approx(expected)
        assert q["ci_low"] < q["value"] < q["ci_high"]
        for statistic in ("probability_of_improvement", "probability_exceeds"):
            p = pick(first, scenario, statistic, "best_static")
            assert 0.0 <= p["ci_low"] <= p["value"] <= p["ci_high"] <= 1.0


def test_tables_from_rows_sum_the_user_loss_and_keep_episode_order():
    rows = [
        {"policy": name, "scenario": sc, "episode": e, "bad_debt_usd": 10.0 * e + k,
         "adl_volume_usd": 1.0, "mean_capital_locked_usd": 100.0 + e}
        for k, name in enumerate(["g@seed_1", "g@seed_2", "rule"])
        for sc in ("x", "y")
        for e in (1, 0)  # out of order on purpose
    ]  # fmt: skip
    loss, capital = tables_from_rows(rows, "g", {1: "g@seed_1", 2: "g@seed_2"}, ["rule"], ["x"])
    assert loss.values.shape == (1, 2, 2) and loss.seeds == (1, 2)
    np.testing.assert_array_equal(loss.values[0], [[1.0, 11.0], [2.0, 12.0]])  # bad debt + ADL
    np.testing.assert_array_equal(loss.references["rule"], [[3.0, 13.0]])
    np.testing.assert_array_equal(capital.values[0, 0], [100.0, 101.0])
    with pytest.raises(ValueError, match="same number of episodes"):
        tables_from_rows(rows[:-1], "g", {1: "g@seed_1"}, ["rule"], ["y"])


# ---- multi-seed directories: naming and bad input ----


def fake_group(root, seeds, changed=None):
    """A directory of seed runs holding only config.yaml (enough for the config check)."""
    for seed in seeds:
        run = root / f"seed_{seed}"
        run.mkdir(parents=True)
        cfg = {"algo": "ppo", "seed": seed, "env": {"n_accounts": 32}, "total_timesteps": 64}
        cfg.update((changed or {}).get(seed, {}))
        (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    return root


def test_seeds_from_different_configs_are_refused(tmp_path):
    group = fake_group(tmp_path / "g", [2, 10], {10: {"total_timesteps": 128}})
    with pytest.raises(SpecError, match=r"seeds 2 and 10 were trained from different configs "
                       r"\(total_timesteps: 64 in .*seed_2/config.yaml, 128 in "):  # fmt: skip
        parse_specs([str(group)])
    # one spec: the whole directory is not a run; a seed of it is named instead
    with pytest.raises(SpecError, match="holds one run per seed"):
        parse_spec(str(group))


def test_cli_bad_seed_directories_exit_2_and_write_nothing(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes").mkdir()
    mixed = fake_group(tmp_path / "mixed", [0, 1], {1: {"env": {"n_accounts": 64}}})
    broken = tmp_path / "broken"
    (broken / "seed_3").mkdir(parents=True)
    for policy, message in (
        (empty, "has no config.yaml and no seed_<S>/ runs"),
        (mixed, "seeds 0 and 1 were trained from different configs (env.n_accounts"),
        (broken, "seed_3/config.yaml: missing"),
    ):
        out = tmp_path / f"out_{policy.name}"
        code = main(["evaluate", "--policy", str(policy), "--out", str(out), "--no-progress"])
        err = capsys.readouterr().err
        assert code == 2 and message in err, err
        assert "Traceback" not in err and not out.exists()


def test_train_backend_ray_without_ray_exits_2_before_writing(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as where not installed
    out = tmp_path / "seeds"
    code = main(["train", "--seeds", "0,1", "--backend", "ray", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "--backend ray needs Ray" in err and "pip install fundgym[ray]" in err
    assert list(tmp_path.iterdir()) == []


# ---- a real 2-seed training, end to end ----

TINY_SEEDS = [*TINY_TRAIN, "total_timesteps=64", "eval.freq=64"]


def train_seeds(out, *extra):
    sets = [a for o in TINY_SEEDS for a in ("--set", o)]
    return main(["train", *sets, "--seeds", "0,1", "--out", str(out), "--no-progress", *extra])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 2-seed tiny training, and torch's thread count it ran with (its numbers depend on it;
    an in-process evaluation sets the process to one thread)."""
    out = tmp_path_factory.mktemp("train") / "ppo"
    assert train_seeds(out) == 0
    return out, torch.get_num_threads()


@pytest.fixture
def two_seeds(trained):
    return trained[0]


def test_evaluate_a_multi_seed_directory(two_seeds, tmp_path, capsys):
    out = tmp_path / "eval"
    code = main(
        ["evaluate", "--policy", str(two_seeds), "--policy", "rule", "--policy", "static:dydx",
         "--scenarios", "training", "--episodes", "2", "--out", str(out), "--workers", "1",
         "--cache-dir", "none", "--no-progress"]
    )  # fmt: skip
    stdout = capsys.readouterr().out
    assert code == 0
    assert "ppo across seeds 0, 1:" in stdout and "P(loss > rule)" in stdout
    # every seed ran as its own policy; metrics.csv keeps its columns
    with (out / "metrics.csv").open() as f:
        metrics = list(csv.DictReader(f))
    assert list(metrics[0])[: len(EPISODE_COLUMNS)] == list(EPISODE_COLUMNS)
    names = ["ppo@seed_0", "ppo@seed_1", "rule", "static:dydx"]
    assert list(dict.fromkeys(r["policy"] for r in metrics)) == names
    # the seeds differ (otherwise nothing is being measured across them)
    weights = [torch.load(two_seeds / f"seed_{s}" / "best" / "policy.pt") for s in (0, 1)]
    assert not all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    # seeds.csv: a seed's mean is the mean of its episodes' bad debt + ADL in metrics.csv
    with (out / "seeds.csv").open() as f:
        seeds = list(csv.DictReader(f))
    assert list(seeds[0]) == list(SEED_COLUMNS)
    for s in (0, 1):
        mine = [r for r in metrics if r["policy"] == f"ppo@seed_{s}"]
        loss = np.mean([float(r["bad_debt_usd"]) + float(r["adl_volume_usd"]) for r in mine])
        (row,) = [
            r for r in seeds
            if (r["metric"], r["scenario"], r["statistic"], r["seed"])
            == ("solvency_loss_usd", "ALL", "seed_mean", str(s))
        ]  # fmt: skip
        assert float(row["value"]) == pytest.approx(loss)
    references = {r["reference"] for r in seeds if r["statistic"] == "probability_exceeds"}
    assert references == {"rule", "static:dydx"}
    # each seed's loss over a reference's that lost something; no ratio where it lost nothing
    for ref in references:
        theirs = [r for r in metrics if r["policy"] == ref]
        ref_loss = np.mean([float(r["bad_debt_usd"]) + float(r["adl_volume_usd"]) for r in theirs])
        ratios = {
            r["seed"]: float(r["value"])
            for r in seeds
            if (r["metric"], r["scenario"], r["statistic"], r["reference"])
            == ("solvency_loss_usd", "ALL", "seed_ratio", ref)
        }
        if ref_loss > 0:
            means = {
                r["seed"]: float(r["value"])
                for r in seeds
                if (r["metric"], r["scenario"], r["statistic"])
                == ("solvency_loss_usd", "ALL", "seed_mean")
            }
            assert ratios == pytest.approx({sd: m / ref_loss for sd, m in means.items()})
        else:
            assert ratios == {}
    # summary.json carries the same rows; the report has its section; the result too
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seeds"]["ppo"]["seeds"] == [0, 1]
    assert len(summary["seeds"]["ppo"]["rows"]) == len(seeds)
    report = (out / "report.md").read_text()
    assert "## Across training seeds" in report and "P(loss > rule)" in report
    assert "| seed | user loss | capital locked | user loss / rule's (paired 95%) |" in report
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert [p.get("train_seed") for p in config["policies"]] == [0, 1, None, None]


def test_a_single_run_evaluation_writes_no_seed_statistics(two_seeds, tmp_path):
    out = tmp_path / "eval"
    result = ev.evaluate(
        [str(two_seeds / "seed_1"), "rule"], ["training"], 1, out, workers=1,
        cache_dir=None, progress=False, report=False,
    )  # fmt: skip
    assert result.seeds == {} and not (out / "seeds.csv").exists()
    assert "seeds" not in json.loads((out / "summary.json").read_text())
    assert [r["policy"] for r in result.by_policy] == ["seed_1", "rule"]


def test_ray_trains_every_seed_as_the_local_backend_does(trained, tmp_path):
    pytest.importorskip("ray")
    two_seeds, threads = trained
    out = tmp_path / "ray"
    before = torch.get_num_threads()
    torch.set_num_threads(threads)  # the Ray tasks train with this process's thread count
    try:
        assert train_seeds(out, "--backend", "ray") == 0
    finally:
        torch.set_num_threads(before)
    for seed in (0, 1):
        for which in ("final", "best"):
            local = torch.load(two_seeds / f"seed_{seed}" / which / "policy.pt")
            remote = torch.load(out / f"seed_{seed}" / which / "policy.pt")
            assert all(torch.equal(local[k], remote[k]) for k in local), (seed, which)
            for name in ("normalize.npz",):
                a = (two_seeds / f"seed_{seed}" / which / name).read_bytes()
                assert a == (out / f"seed_{seed}" / which / name).read_bytes()
        evals = "evaluations.csv"
        assert (two_seeds / f"seed_{seed}" / evals).read_text() == (
            out / f"seed_{seed}" / evals
        ).read_text()


def test_seed_verdict_applies_the_dominance_bar_to_the_iqms():
    # Hand-made rows: IQM loss 40 against best_static's 100 (x0.40 <= 0.5) and IQM capital 90
    # against 100 (no more): the loss rule holds.
    def row(metric, statistic, value, ref="", lo=0.0, hi=0.0):
        return {
            "policy": "ppo", "metric": metric, "scenario": "ALL", "statistic": statistic,
            "reference": ref, "seed": "", "value": value, "ci_low": lo, "ci_high": hi,
            "seeds": 5, "episodes": 8,
        }  # fmt: skip

    loss, cap = SEED_METRICS
    rows = [
        row(loss, "iqm", 40.0, lo=30.0, hi=55.0),
        row(cap, "iqm", 90.0, lo=80.0, hi=95.0),
        row(loss, "reference_mean", 100.0, "best_static"),
        row(cap, "reference_mean", 100.0, "best_static"),
        row(loss, "probability_of_improvement", 0.8, "best_static", 0.7, 0.9),
        row(loss, "probability_exceeds", 0.1, "best_static", 0.05, 0.2),
        row(loss, "worst_seed_no_worse", 1.0, "best_static"),
    ]
    v = seed_verdict(rows, "ppo")
    assert v.dominance["dominates"] and v.dominance["rule"] == "loss"
    assert v.dominance["loss_ratio"] == pytest.approx(0.4)
    assert v.dominance["capital_ratio"] == pytest.approx(0.9)
    assert v.loss_iqm_usd == (40.0, 30.0, 55.0) and v.p_improvement == (0.8, 0.7, 0.9)
    assert v.worst_seed_no_worse and v.n_seeds == 5
    assert v.worst_seed is None and v.worst_seed_ratio is None  # rows without them: none
    with_worst = [
        *rows,
        {**row(loss, "worst_seed", 44.0), "seed": 3},
        {**row(loss, "seed_ratio", 0.44, "best_static", 0.3, 0.6), "seed": 3},
        {**row(loss, "seed_ratio", 0.36, "best_static", 0.2, 0.5), "seed": 1},
    ]
    v = seed_verdict(with_worst, "ppo")
    assert v.worst_seed == 3 and v.worst_seed_ratio == (0.44, 0.3, 0.6)
    # the multi-market command's summary, against its defaults, prints the same
    from fundgym.agents.evaluate.markets_runs import seed_summary

    as_defaults = [{**r, "reference": "defaults" if r["reference"] else ""} for r in with_worst]
    text = seed_summary(as_defaults, "ppo")
    assert (
        "worst seed (3) no worse than the defaults on loss: yes (x0.440 [0.300, 0.600] paired)"
        in text
    )
    assert "worst seed no worse than the defaults on loss: yes;" in seed_summary(
        [{**r, "reference": "defaults" if r["reference"] else ""} for r in rows], "ppo"
    )
    # capital above the reference's and loss above half: neither rule
    rows[1] = row(cap, "iqm", 120.0)
    assert not seed_verdict(rows, "ppo").dominance["dominates"]
    with pytest.raises(ValueError, match="no 'reference_mean' of solvency_loss_usd"):
        seed_verdict(rows, "ppo", reference="rule")

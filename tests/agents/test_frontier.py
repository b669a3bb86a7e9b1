"""The solvency-vs-capital frontier: Pareto sets, the rule, the NSGA-II study and its resume."""

import csv
import dataclasses
import json

import optuna
import pytest
import yaml

from fundgym.agents import evaluate as ev
from fundgym.agents.cli import main
from fundgym.agents.evaluate import frontier as fr
from fundgym.agents.evaluate.backends import static_spec
from fundgym.agents.evaluate.episodes import Job, run_jobs, score
from fundgym.agents.evaluate.metrics import summarize_policies
from fundgym.agents.evaluate.search import grid_points, search_best_static
from fundgym.agents.policies import PRESETS, STATIC_PARAMS, PolicySpec, parse_spec
from fundgym.agents.policies.presets import Engine
from fundgym.envs.controls import PARAMS

# A 2 x 2 grid: population 4 (the grid is generation 0).
GRID4 = {"mmr": (0.01, 0.1), "liquidation_fee_rate": (0.005, 0.02)}


@pytest.fixture(scope="module")
def env_yaml(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "env.yaml"
    path.write_text(
        yaml.safe_dump({"env": {"n_accounts": 64, "decision_minutes": 10, "horizon_minutes": 60}})
    )
    return path


@pytest.fixture(scope="module")
def base(env_yaml):
    return ev.base_env(env_yaml, [])


# ---- Pareto dominance and the rule, by hand ----

# (loss, capital): A and B trade off, C is dominated by A, D ties A exactly, E is dominated by B
POINTS = [(10.0, 100.0), (0.0, 300.0), (12.0, 150.0), (10.0, 100.0), (0.0, 400.0)]


def test_the_front_keeps_points_no_other_beats_and_ties_stay():
    assert fr.pareto_front(POINTS) == [True, True, False, True, False]
    front = [POINTS[i] for i in (0, 1, 3)]
    # C (12, 150) is dominated by A and D (same point): the first of the least capital
    assert fr.dominated_by(POINTS[2], front) == 0
    # E (0, 400) only by B
    assert fr.dominated_by(POINTS[4], front) == 1
    assert fr.dominated_by(POINTS[0], front) is None
    assert not fr.dominates((1.0, 1.0), (1.0, 1.0))


def test_loss_within_takes_the_cheapest_point_near_the_lowest_loss():
    loss = [100.0, 105.0, 111.0, 200.0]
    capital = [900.0, 500.0, 100.0, 50.0]
    # bound 100 x 1.1 = 110: the first two qualify, the second is cheaper
    assert fr.SelectionRule("loss_within", 0.1).pick(loss, capital) == 1
    # bound 100 x 1.11 = 111: the third qualifies too and is cheaper still
    assert fr.SelectionRule("loss_within", 0.11).pick(loss, capital) == 2
    # zero tolerance: the lowest loss, whatever it costs
    assert fr.SelectionRule("loss_within", 0.0).pick(loss, capital) == 0
    # a zero lowest loss admits only zero losses
    assert fr.SelectionRule("loss_within", 0.5).pick([0.0, 1.0], [9.0, 1.0]) == 0


def test_weighted_minimises_loss_plus_w_capital():
    loss = [100.0, 105.0, 111.0, 200.0]
    capital = [900.0, 500.0, 100.0, 50.0]
    # w = 0.01: 109, 110, 112, 200.5 -> the first
    assert fr.SelectionRule("weighted", 0.01).pick(loss, capital) == 0
    # w = 0.1: 190, 155, 121, 205 -> the third
    assert fr.SelectionRule("weighted", 0.1).pick(loss, capital) == 2


def test_rules_parse_and_bad_ones_name_what_is_allowed():
    assert fr.parse_rule("loss_within=0.25") == fr.SelectionRule("loss_within", 0.25)
    assert fr.parse_rule("weighted=0") == fr.SelectionRule("weighted", 0.0)
    for text, message in [
        ("knee", "expected NAME=VALUE, one of: loss_within="),
        ("loss_within=abc", "'abc' is not a number"),
        ("weighted=-1", "must be finite and >= 0, got -1"),
        ("loss_within=nan", "must be finite and >= 0"),
    ]:
        with pytest.raises(fr.FrontierError, match=message):
            fr.parse_rule(text)


# ---- the search ----


def test_grid_first_same_seeds_and_a_resumed_study_extends_the_first(base, tmp_path):
    grid = grid_points(GRID4)
    url = f"sqlite:///{tmp_path / 'f.db'}"
    kw = dict(grid=grid, presets=(), workers=1, storage=url, study_name="s")
    first = fr.search_frontier(base, ["training"], 2, 7, 6, **kw)
    assert first.new_trials == 6 and len(first.trials) == 6
    # the grid is the first generation, exactly, then NSGA-II breeds from it
    assert [t.values for t in first.trials[:4]] == grid
    # under the environment's own engine: the old grid exactly
    assert {t.engine for t in first.trials[:4]} == {Engine("partial", "bitmex", "none", 0.02, 0.0)}
    assert [t.source for t in first.trials] == ["grid"] * 4 + ["nsga2"] * 2
    assert [t.generation for t in first.trials] == [0, 0, 0, 0, 1, 1]
    # a candidate's objectives are the pooled means of its own episodes, seeds 7 and 8
    g = first.trials[2]
    spec = PolicySpec("x", "static", values=g.values)
    rows = score(run_jobs([Job(spec, "training", ev.job_env(base, spec, "training"), 2, 7)], 1)[0])
    assert [r["seed"] for r in rows] == [7, 8]
    s = summarize_policies(rows)[0]
    assert g.solvency_loss_usd == pytest.approx(s["solvency_loss_usd"], rel=1e-12)
    assert s["vault_initial_usd"] == 0.0  # no vault under the partial engine
    assert g.capital_locked_usd == pytest.approx(s["mean_capital_locked_usd"], rel=1e-12)
    # solvency loss = socialised + unrecovered + deleveraged, per episode, then the mean
    parts = ("socialized_loss_usd", "unrecovered_usd", "adl_volume_usd")
    mean_loss = sum(float(r[k]) for r in rows for k in parts) / 2
    assert g.solvency_loss_usd == pytest.approx(mean_loss, rel=1e-12, abs=1e-9)
    # resuming to 10 trials runs 4 more: the 2 generation 1 lacks, then 2 of generation 2
    more = fr.search_frontier(base, ["training"], 2, 7, 10, **kw)
    assert more.new_trials == 4 and len(more.trials) == 10
    assert more.trials[:6] == first.trials
    assert [t.generation for t in more.trials[6:]] == [1, 1, 2, 2]
    # nothing to do: the same study, read again
    again = fr.search_frontier(base, ["training"], 2, 7, 10, **kw)
    assert again.new_trials == 0 and again.trials == more.trials
    # asking for fewer reads the study's first trials
    assert fr.search_frontier(base, ["training"], 2, 7, 6, **kw).trials == first.trials
    # every point of the front is dominated by no trial; every other one by a front trial
    for t, on, by in zip(more.trials, more.pareto, more.dominated_by, strict=True):
        assert on == (by is None)
        if by is not None:
            assert fr.dominates(more.trial(by).point, t.point)
    assert more.pareto[[t.number for t in more.trials].index(more.chosen)]
    # other settings are refused, not mixed in
    with pytest.raises(fr.FrontierError, match=r"other settings \(episodes differ\)"):
        fr.search_frontier(base, ["training"], 3, 7, 10, **kw)


def test_a_failed_generation_is_failed_in_the_study_and_asked_again(base, tmp_path, monkeypatch):
    grid = grid_points({"mmr": (0.01, 0.1)})
    url = f"sqlite:///{tmp_path / 'f.db'}"
    kw = dict(grid=grid, presets=("dydx",), workers=1, storage=url)

    def boom(*args, **kwargs):
        raise ev.EvaluateError("episode cannot be scored")

    monkeypatch.setattr(fr, "run_policies", boom)
    with pytest.raises(ev.EvaluateError, match="cannot be scored"):
        fr.search_frontier(base, ["training"], 1, 0, 3, **kw)
    monkeypatch.undo()
    study = optuna.load_study(study_name="frontier", storage=url)
    assert [t.state.name for t in study.trials] == ["FAIL"] * 3 + ["WAITING"] * 3
    # the failed grid points and the preset went back into the queue, in order, with their
    # sources: the resumed study starts with them
    res = fr.search_frontier(base, ["training"], 1, 0, 3, **kw)
    assert res.new_trials == 3 and [t.values for t in res.trials[:2]] == grid
    assert [t.source for t in res.trials] == ["grid", "grid", "preset:dydx"]
    assert res.trials[2].values == PRESETS["dydx"].values
    assert res.trials[2].engine == PRESETS["dydx"].engine


def test_best_static_is_the_rules_pick_with_its_engine_and_is_cached(base, tmp_path):
    tiny = {"mmr": (0.01, 0.1)}
    kw = dict(presets=("hyperliquid",))
    first = search_best_static(base, 2, 3, 1, tmp_path, False, tiny, **kw)
    assert not first.cached and len(first.points) == 9  # 3 generations of 2 + 1
    assert [p["source"] for p in first.points[:3]] == ["grid", "grid", "preset:hyperliquid"]
    front = [p for p in first.points if p["pareto"]]
    loss = [p["solvency_loss_usd"] for p in front]
    cap = [p["mean_capital_locked_usd"] for p in front]
    pick = front[fr.DEFAULT_RULE.pick(loss, cap)]
    assert first.best == pick["values"] and first.engine == pick["engine"]
    assert set(first.best) == set(STATIC_PARAMS)
    assert "within 10% of the lowest" in first.rule
    # the policy that runs it carries the engine it was scored under, named best_static
    spec = first.spec("note")
    assert (spec.name, spec.kind, spec.note) == ("best_static", "static", "note")
    assert spec.values == first.best
    overrides = spec.env_overrides()
    assert {k: overrides[k] for k in pick["engine"]} == pick["engine"]
    assert Engine(**pick["engine"]).describe() in first.describe()
    assert len(list(tmp_path.glob("frontier-*.db"))) == 1
    again = search_best_static(base, 2, 3, 1, tmp_path, False, tiny, **kw)
    assert again.cached and again.best == first.best and again.points == first.points
    assert again.engine == first.engine
    # the same grid without the preset is another study, in another file
    assert search_best_static(base, 2, 3, 1, tmp_path, False, tiny, presets=()).cached is False
    assert len(list(tmp_path.glob("frontier-*.db"))) == 2


# ---- the engine in the search space ----


def _inside(name, value):
    """Whether a trial parameter lies in the study's search space."""
    if name in STATIC_PARAMS:
        return PARAMS[name].low <= value <= PARAMS[name].high
    if name in ("fund_to_oi_frac", "vault_to_oi_frac"):
        low, high = fr.FUND_RANGE if name == "fund_to_oi_frac" else fr.VAULT_RANGE
        return low <= value <= high
    choices = {
        "liquidation_mode": fr.LIQUIDATION_MODES,
        "adl_policy": fr.ADL_POLICIES,
        "margin_tiers": fr.MARGIN_TIERS,
        "backstop": fr.BACKSTOPS,
    }
    return value in choices[name]


def test_every_venue_preset_is_a_point_of_the_search_space(base):
    points = fr.first_generation(base, grid_points(GRID4), tuple(PRESETS))
    assert [s for s, _ in points] == ["grid"] * 4 + [f"preset:{p}" for p in PRESETS]
    for source, params in points:
        assert all(_inside(k, v) for k, v in params.items()), (source, params)
    by = dict(points)
    # Hyperliquid: no fund, a 2.2% vault; BitMEX: a 27.5% fund and no vault
    assert by["preset:hyperliquid"]["backstop"] == "vault"
    assert "fund_to_oi_frac" not in by["preset:hyperliquid"]
    assert by["preset:bitmex"]["backstop"] == "fund"
    assert by["preset:bitmex"]["fund_to_oi_frac"] == 0.275
    for name, preset in PRESETS.items():
        params = by[f"preset:{name}"]
        assert {k: params[k] for k in STATIC_PARAMS} == preset.values
        # an undrawn size does not act, whatever the sampler draws for it
        full = {"fund_to_oi_frac": 0.3, "vault_to_oi_frac": 0.4, **params}
        assert fr.decode_engine(full) == preset.engine
        # and the policy the search runs is the preset's environment, setting for setting
        ours = fr.Trial(0, preset.values, preset.engine, 0.0, 0.0, 0.0, "x", 0).spec()
        assert ours == static_spec(preset.values, preset.engine)
        assert ours.name.endswith(preset.engine.text())  # named by its levers and engine
        assert ev.job_env(base, ours, "training") == ev.job_env(
            base, parse_spec(f"static:{name}"), "training"
        )


def test_decode_engine_counts_only_the_backstops_it_starts():
    drawn = {"adl_policy": "drift", "margin_tiers": "none"}
    drawn |= {"fund_to_oi_frac": 0.01, "vault_to_oi_frac": 0.05}
    cases = [
        ("bitmex", "fund", 0.01, 0.0),
        ("bitmex", "vault", 0.0, 0.05),
        ("bitmex", "fund_and_vault", 0.01, 0.05),
        ("bitmex", "none", 0.0, 0.0),
        # partial hands no account to a vault: a vault there is none
        ("partial", "vault", 0.0, 0.0),
        ("partial", "fund_and_vault", 0.01, 0.0),
    ]
    for mode, backstop, fund, vault in cases:
        e = fr.decode_engine({**drawn, "liquidation_mode": mode, "backstop": backstop})
        assert (e.fund_to_oi_frac, e.vault_to_oi_frac) == (fund, vault), (mode, backstop)
        assert (e.liquidation_mode, e.adl_policy) == (mode, "drift")


def test_a_point_outside_the_engine_space_is_refused_by_name(base):
    big = dataclasses.replace(PRESETS["bitmex"].engine, fund_to_oi_frac=0.9)
    message = r"preset 'x': fund_to_oi_frac = 0.9 is outside the searched range \[0.001, 0.5\]"
    with pytest.raises(fr.FrontierError, match=message):
        fr.encode_engine(big, "preset 'x'")
    vault = Engine("partial", "bitmex", "none", 0.02, 0.01)
    with pytest.raises(fr.FrontierError, match="a vault needs a liquidation mode other than"):
        fr.encode_engine(vault, "the environment's engine")
    with pytest.raises(fr.FrontierError, match=r"preset 'ftx': allowed \['binance'"):
        fr.first_generation(base, grid_points(GRID4), ("ftx",))


def test_a_preset_as_a_trial_scores_as_the_preset_and_its_vault_is_capital(base):
    res = fr.search_frontier(
        base, ["training"], 1, 5, 3, grid=grid_points({"mmr": (0.01, 0.1)}),
        presets=("hyperliquid",), workers=1,
    )  # fmt: skip
    hl = res.trials[2]
    assert hl.source == "preset:hyperliquid" and hl.generation == 0
    spec = parse_spec("static:hyperliquid")
    (placed,) = fr.place_policies(res, [spec], base, workers=1)
    assert (placed.solvency_loss_usd, placed.capital_locked_usd) == hl.point
    rows = score(run_jobs([Job(spec, "training", ev.job_env(base, spec, "training"), 1, 5)], 1)[0])
    s = summarize_policies(rows)[0]
    # the vault (2.2% of open interest at the start) is capital locked, like the fund: the
    # environment's capital_locked_usd holds its equity (tests/envs/test_capital_locked.py)
    assert s["vault_initial_usd"] > 0.0
    assert hl.capital_locked_usd == pytest.approx(s["mean_capital_locked_usd"], rel=1e-12)
    assert hl.capital_locked_usd > s["mean_fund_usd"] + 0.5 * s["vault_initial_usd"]
    # a preset on the front or dominated: the placed preset says the same
    on = res.pareto[2]
    assert (placed.dominated_by is None) == on


def test_a_study_of_the_old_lever_only_space_is_refused(base, tmp_path):
    grid = grid_points(GRID4)
    url = f"sqlite:///{tmp_path / 'old.db'}"
    old = fr.settings_key(base, ["training"], 1, 0, grid)
    for key in ("engine", "grid_engine", "presets"):
        old.pop(key)
    old["objectives"] = list(fr.OBJECTIVES)  # the old space's record of its objectives
    study = optuna.create_study(storage=url, study_name="frontier", directions=["minimize"] * 2)
    study.set_user_attr("settings", old)
    with pytest.raises(fr.FrontierError, match=r"other settings \(engine, grid_engine, "):
        fr.search_frontier(base, ["training"], 1, 0, 4, grid=grid, workers=1, storage=url)
    assert len(study.trials) == 0  # nothing was mixed in


# ---- the command ----


def test_cli_writes_the_frontier_and_resumes(capsys, tmp_path, env_yaml):
    out = tmp_path / "front"
    args = [
        "frontier", "--out", str(out), "--episodes", "1", "--config", str(env_yaml),
        "--workers", "1", "--policies", "static:dydx,rule", "--no-progress",
    ]  # fmt: skip
    assert main([*args, "--trials", "3"]) == 0
    text = capsys.readouterr().out
    assert "3 trials (3 run now" in text and "static:dydx" in text
    assert main([*args, "--trials", "5"]) == 0
    assert "5 trials (2 run now" in capsys.readouterr().out
    data = json.loads((out / "frontier.json").read_text())
    assert data["kind"] == "fundgym.frontier" and data["trials"] == 5
    assert data["rule"]["text"] == "loss_within=0.1"
    assert data["best_static"]["engine"]["liquidation_mode"] == "partial"
    assert data["settings"]["population"] == 28  # the 24 grid points and the 4 presets
    assert [p["name"] for p in data["policies"]] == ["static:dydx", "rule"]
    with (out / "frontier.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 5 and [r["source"] for r in rows] == ["grid"] * 5
    assert set(STATIC_PARAMS) <= set(rows[0])
    assert {r["liquidation_mode"] for r in rows} == {"partial"}  # the grid: the env's engine
    assert sum(r["best_static"] == "true" for r in rows) == 1
    for r in rows:
        assert (r["pareto"] == "true") == (r["dominated_by"] == "")
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["trials"] == 5 and config["scenarios"] == ["training"]
    assert config["env"]["n_accounts"] == 64
    assert (out / "frontier.png").read_bytes().startswith(b"\x89PNG")
    assert "## The Pareto front" in (out / "frontier.md").read_text()
    assert (out / "frontier.db").is_file()


def test_cli_refuses_bad_input_with_exit_code_2(capsys, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    out = str(tmp_path / "x")
    big = tmp_path / "big_fund.yaml"
    big.write_text(yaml.safe_dump({"env": {"n_accounts": 64, "fund_to_oi_frac": 0.8}}))
    cases = [
        (
            ["--trials", "2", "--out", out, "--config", str(big)],
            "the environment's engine (the grid's): fund_to_oi_frac = 0.8 is outside the "
            "searched range [0.001, 0.5]",
        ),
        (["--trials", "0", "--out", out], "--trials must be >= 1, got 0"),
        (["--trials", "2", "--out", out, "--rule", "knee"], "--rule 'knee': expected NAME=VALUE"),
        (["--trials", "2", "--out", out, "--address", "h:1"], "--address 'h:1' needs --backend"),
        (["--trials", "2", "--out", out, "--storage", "x.db"], "expected sqlite:///PATH.db"),
        (["--trials", "2", "--out", out, "--policies", "best_static"], "a searched set"),
        (["--trials", "2", "--out", out, "--scenarios", "mars"], "unknown scenario 'mars'"),
        (["--trials", "2", "--out", str(tmp_path / "mine")], "not a fundgym frontier directory"),
    ]
    for extra, message in cases:
        code = main(["frontier", "--no-progress", *extra])
        err = capsys.readouterr().err
        assert code == 2, extra
        assert message in err, err
    assert not (tmp_path / "x").exists()

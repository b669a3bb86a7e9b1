"""State-table distillation: the file, the lookup, fidelity, and replay reproducing it."""

import csv
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fundgym.agents.export.table as distill
from fundgym.agents import evaluate as ev
from fundgym.agents.config import load_config
from fundgym.agents.export.table import FEATURES, TableExport, distill_table, rollout
from fundgym.agents.policies import (
    PolicySpec,
    SpecError,
    TableError,
    TablePolicy,
    parse_spec,
    read_table,
    replay_env,
)
from fundgym.agents.training.train import train
from fundgym.envs.controls import ALLOCATION, PARAMS
from fundgym.envs.exchange_env import OBS_NAMES
from tests.tiny_runs import TINY_TRAIN

ROOT = Path(__file__).resolve().parents[2]
PPO = ROOT / "configs" / "train" / "ppo.yaml"

# The shared tiny run (tests/tiny_runs.py): a few seconds, one-hour episodes (6 decisions).
TINY = TINY_TRAIN
SCENARIOS = ("training", "venue_flash_wick")
EPISODES = 2


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("distill") / "run"
    train(load_config(PPO, TINY), out, progress=False)
    return out


@pytest.fixture(scope="module")
def exported(run: Path) -> TableExport:
    out = run.parent / "tables" / "table.json"
    return distill_table(run, out, scenarios=SCENARIOS, episodes=EPISODES, bins=3)


def model_spec(run: Path) -> PolicySpec:
    return PolicySpec(run.name, "trained", path=str(run))


def model_env(run: Path, scenario: str) -> dict:
    spec = model_spec(run)
    return ev.job_env(ev.base_env(run / "config.yaml", [spec]), spec, scenario)


def value_in(edges: list, k: int) -> float:
    """A value inside bin ``k`` of a feature (edges as stored: '-inf', numbers, 'inf')."""
    lo, hi = float(edges[k]), float(edges[k + 1])
    if math.isinf(lo) and math.isinf(hi):
        return 0.0
    if math.isinf(lo):
        return hi - 1.0
    if math.isinf(hi):
        return lo + 1.0
    return 0.5 * (lo + hi)


# ------------------------------------------------------------------ the file ----


def test_the_file_round_trips_and_its_cells_add_up(exported):
    path = exported.path
    table = read_table(path)
    assert table == json.loads(path.read_text())
    assert table["kind"] == "fundgym.state_table" and table["schema_version"] == "1"
    assert sorted(p.name for p in path.parent.iterdir()) == ["table.csv", "table.json"]
    assert [f["name"] for f in table["features"]] == list(FEATURES)
    shape = []
    for f in table["features"]:
        assert f["obs_index"] == OBS_NAMES.index(f["name"]) and f["unit"]
        edges = f["edges"]
        assert edges[0] == "-inf" and edges[-1] == "inf"
        inner = np.array(edges[1:-1], dtype=float)
        assert np.all(np.diff(inner) > 0)  # quantile edges, deduplicated
        assert 1 <= len(edges) - 1 <= 3
        shape.append(len(edges) - 1)
    cells = table["cells"]
    assert table["shape"] == shape
    assert len(cells) == exported.n_cells == math.prod(shape)
    assert exported.n_filled == sum(c["n"] > 0 for c in cells) >= 1
    fit = table["fit"]
    assert fit["scenarios"] == list(SCENARIOS) and fit["episodes"] == EPISODES
    assert fit["n_samples"] == EPISODES * (6 + 18)  # every decision of every episode
    assert sum(c["n"] for c in cells) == fit["n_samples"]
    controlled = table["controlled"]
    by_bin = {tuple(c["bin"]): c for c in cells}
    for c in cells:
        assert c["n"] >= 0
        assert len(c["action"]) == len(controlled)
        assert all(-1.0 <= a <= 1.0 for a in c["action"])
        assert set(c["state"]) == set(FEATURES)
        if c["n"] == 0:  # copied from a filled neighbour
            src = by_bin[tuple(c["filled_from"])]
            assert src["n"] > 0 and src["action"] == c["action"]
        else:
            assert "filled_from" not in c
    assert exported.fidelity == table["fidelity"]


def test_params_are_the_actions_in_natural_units(exported):
    table = read_table(exported.path)
    controlled = table["controlled"]
    for c in table["cells"]:
        p = c["params"]
        for j, name in enumerate(controlled):
            if name in ALLOCATION:
                assert p[f"{name}_logit"] == pytest.approx(c["action"][j])
            else:
                assert p[name] == pytest.approx(float(PARAMS[name].to_value(c["action"][j])))
        if any(name in ALLOCATION for name in controlled):
            assert sum(p[name] for name in ALLOCATION) == pytest.approx(1.0)
        else:  # the default config keeps the fund in stable assets: no allocation columns
            assert not any(name in p for name in ALLOCATION)
        assert p["imr"] == pytest.approx(min(p["mmr"] * p["imr_multiple"], 1.0))


def test_the_csv_has_one_row_per_cell(exported):
    table = read_table(exported.path)
    with exported.path.with_suffix(".csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(table["cells"])
    for row, cell in zip(rows, table["cells"], strict=True):
        assert [row[f] for f in FEATURES] == [cell["state"][f] for f in FEATURES]
        assert int(row["n"]) == cell["n"]
        assert float(row["mmr"]) == pytest.approx(cell["params"]["mmr"], rel=1e-5)


def test_same_run_and_seeds_give_the_same_file(run, exported, tmp_path):
    again = distill_table(run, tmp_path / "t.json", scenarios=SCENARIOS, episodes=2, bins=3)
    a, b = read_table(exported.path), read_table(again.path)
    assert a == b


# ------------------------------------------------------------------ the lookup ----


def test_act_returns_the_cell_the_features_fall_in(exported):
    table = read_table(exported.path)
    policy = TablePolicy.load(exported.path, "table", tuple(table["controlled"]))
    obs = np.zeros((len(table["cells"]), len(OBS_NAMES)))
    for r, cell in enumerate(table["cells"]):
        for f, k in zip(table["features"], cell["bin"], strict=True):
            obs[r, f["obs_index"]] = value_in(f["edges"], k)
    got = policy.act(obs)
    assert got.shape == (len(table["cells"]), len(table["controlled"]))
    np.testing.assert_array_equal(got, [c["action"] for c in table["cells"]])


def hand_table(**changes) -> dict:
    """One feature (fund coverage) split at 0.2; two cells, two controlled parameters."""
    table = {
        "schema_version": "1",
        "kind": "fundgym.state_table",
        "env": {},
        "controlled": ["liquidation_fee_rate", "mmr"],
        "features": [{"name": "fund_coverage", "obs_index": 15, "edges": ["-inf", 0.2, "inf"]}],
        "cells": [
            {"bin": [0], "n": 3, "action": [0.5, 0.25]},
            {"bin": [1], "n": 0, "action": [-0.5, -0.25]},
        ],
    }
    table.update(changes)
    return table


def test_act_on_a_hand_made_table():
    policy = TablePolicy(hand_table(), "hand", ("liquidation_fee_rate", "mmr"))
    obs = np.zeros((4, len(OBS_NAMES)))
    # an edge belongs to the bin above it
    obs[:, OBS_NAMES.index("fund_coverage")] = [-3.0, 0.19, 0.2, 9.0]
    np.testing.assert_array_equal(
        policy.act(obs), [[0.5, 0.25], [0.5, 0.25], [-0.5, -0.25], [-0.5, -0.25]]
    )
    policy.reset(4)  # stateless
    with pytest.raises(ValueError, match="shape"):
        policy.act(np.zeros((2, 5)))


# ------------------------------------------------------------------ fidelity ----


def test_fidelity_is_reported_for_every_parameter(exported):
    fid = exported.fidelity
    controlled = read_table(exported.path)["controlled"]
    ol, cl = fid["open_loop"], fid["closed_loop"]
    for part in (ol, cl):
        assert part["scenarios"] == list(SCENARIOS)
        assert (part["episodes"], part["seed"]) == (EPISODES, 10_000)
    assert set(ol["params"]) == set(controlled)
    for v in ol["params"].values():
        for units in ("action_units", "natural_units"):
            assert 0.0 <= v[units]["mean_abs"] <= v[units]["max_abs"]
    assert 0.0 <= ol["mean_abs_action"] <= 2.0
    assert {*controlled, "imr"} <= set(cl["params"])
    for v in cl["params"].values():
        assert 0.0 <= v["mean_abs"] <= v["max_abs"] and v["p95_abs"] <= v["max_abs"]
    assert set(cl["max_abs_by_scenario"]) == set(SCENARIOS)


def test_replaying_the_table_reproduces_the_reported_closed_loop_fidelity(run, exported):
    """The round trip: the table's parameters in force vs the model's, on the check seeds."""
    table = read_table(exported.path)
    cl = table["fidelity"]["closed_loop"]
    policy = TablePolicy.load(exported.path, "table", tuple(table["controlled"]))
    gaps: dict[str, list[np.ndarray]] = {}
    for sc in cl["scenarios"]:
        assert replay_env(table, sc) == model_env(run, sc)
        model = ev.run_episodes(model_spec(run), model_env(run, sc), EPISODES, cl["seed"], sc)
        replay = rollout(policy, replay_env(table, sc), EPISODES, cl["seed"])
        for rec, params in zip(model, replay.params, strict=True):
            for name, want in rec.params.items():
                n = min(len(want), len(params[name]))
                gaps.setdefault(name, []).append(np.abs(params[name][:n] - want[:n]))
    assert set(gaps) == set(cl["params"])
    for name, parts in gaps.items():
        g = np.concatenate(parts)
        reported = cl["params"][name]
        assert g.max() <= reported["max_abs"], name
        assert g.max() == reported["max_abs"], name  # deterministic: the same numbers
        assert g.mean() == pytest.approx(reported["mean_abs"], rel=1e-12, abs=1e-15), name
    # The table does not simply copy the model: its parameters do differ somewhere.
    assert max(v["max_abs"] for v in cl["params"].values()) > 0.0


def test_evaluate_runs_the_table_as_a_policy(run, exported):
    """``--policy table:FILE`` through fundgym.agents.evaluate gives the replay's parameters."""
    try:
        spec = parse_spec(f"table:{exported.path}")
    except SpecError:
        pytest.skip("fundgym.agents.policies does not parse table:FILE yet")
    table = read_table(exported.path)
    base = ev.base_env(None, [spec])
    policy = TablePolicy.load(exported.path, "table", tuple(table["controlled"]))
    for sc in SCENARIOS:
        records = ev.run_episodes(spec, ev.job_env(base, spec, sc), EPISODES, 10_000, sc)
        replay = rollout(policy, replay_env(table, sc), EPISODES, 10_000)
        for rec, params in zip(records, replay.params, strict=True):
            assert set(rec.params) == set(params)
            for name in rec.params:
                np.testing.assert_array_equal(rec.params[name], params[name])


# ------------------------------------------------------------------ bad input ----


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        (json.dumps(hand_table(kind="fundgym.schedule")), "kind"),
        (json.dumps(hand_table(schema_version="9")), "schema_version"),
        (json.dumps(hand_table(controlled=["mmr", "nope"])), "controlled"),
        (json.dumps(hand_table(cells=[])), "cells"),
        (json.dumps(hand_table(shape=[3])), "shape"),
        (
            json.dumps(
                hand_table(features=[{"name": "vol_short", "obs_index": 3, "edges": [0, 1]}])
            ),
            r"features\[0\].obs_index",
        ),
        (
            json.dumps(
                hand_table(
                    features=[{"name": "fund_coverage", "obs_index": 15, "edges": ["-inf", "inf"]}]
                )
            ),
            "cells",
        ),
        (
            json.dumps(
                hand_table(
                    cells=[
                        {"bin": [0], "n": 1, "action": [0.5, 2.0]},
                        {"bin": [1], "n": 1, "action": [0.5, 0.0]},
                    ]
                )
            ),
            r"cells\[0\].action",
        ),
        (
            json.dumps(
                hand_table(
                    cells=[
                        {"bin": [0], "n": 1, "action": [0.5, 0.0]},
                        {"bin": [0], "n": 1, "action": [0.5, 0.0]},
                    ]
                )
            ),
            r"cells\[1\].bin",
        ),
    ],
)
def test_a_corrupt_table_raises_naming_the_file_and_field(tmp_path, text, field):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(TableError, match=field) as info:
        read_table(path)
    assert str(path) in str(info.value)
    with pytest.raises(TableError, match=field):
        TablePolicy.load(path, "bad", ("liquidation_fee_rate", "mmr"))


def test_a_missing_table_file_raises_naming_it(tmp_path):
    with pytest.raises(TableError, match=str(tmp_path / "none.json")):
        read_table(tmp_path / "none.json")


def test_a_table_for_other_parameters_is_refused(exported):
    with pytest.raises(TableError, match="controlled") as info:
        TablePolicy.load(exported.path, "table", ("mmr", "liquidation_fee_rate"))
    assert str(exported.path) in str(info.value)
    with pytest.raises(TableError, match="controlled"):
        TablePolicy(hand_table(), "hand", ("mmr",))


def test_a_missing_run_or_model_names_the_file(run, tmp_path):
    with pytest.raises(SpecError, match="no such run directory"):
        distill_table(tmp_path / "nowhere", tmp_path / "t.json")
    bare = tmp_path / "bare"
    bare.mkdir()
    with pytest.raises(SpecError, match=str(bare / "config.yaml")):
        distill_table(bare, tmp_path / "t.json")
    shutil.copy(run / "config.yaml", bare / "config.yaml")
    with pytest.raises(SpecError, match=r"bare/final: missing; .*best/ .*final/"):
        distill_table(bare, tmp_path / "t.json")
    with pytest.raises(TableError, match="bins"):
        distill_table(run, tmp_path / "t.json", bins=0)
    with pytest.raises(TableError, match="features"):
        distill_table(run, tmp_path / "t.json", features=("vol_short", "nope"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bare"]


def test_a_failed_write_leaves_nothing(run, tmp_path, monkeypatch):
    def fail(*args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(distill.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        distill_table(run, tmp_path / "t.json", scenarios=["venue_flash_wick"], episodes=1)
    assert list(tmp_path.iterdir()) == []


def test_applying_a_table_needs_neither_torch_nor_sb3(exported):
    code = (
        "import sys, numpy as np\n"
        "from fundgym.agents.policies import TablePolicy, read_table\n"
        f"path = {str(exported.path)!r}\n"
        "p = TablePolicy.load(path, 't', tuple(read_table(path)['controlled']))\n"
        "p.act(np.zeros((2, 32)))\n"
        "assert 'torch' not in sys.modules and 'stable_baselines3' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_natural_units_give_buckets_not_held_no_weight():
    # controlled: the stable and hedge logits; yield's stays at its start (-1); volatile is
    # not held (env.allocation_buckets), so its logit's start counts for nothing.
    actions = np.array([[1.0, -1.0], [-1.0, -1.0]])
    start = {name: -1.0 for name in PARAMS}
    held = ("stable", "yield", "hedge")
    got = distill.natural_units(actions, ["alloc_stable", "alloc_hedge"], start, held)
    e3, em3 = math.exp(3.0), math.exp(-3.0)
    assert got["alloc_stable"][0] == pytest.approx(e3 / (e3 + 2 * em3))
    assert got["alloc_volatile"].tolist() == [0.0, 0.0]
    np.testing.assert_allclose(got["alloc_stable"][1], 1 / 3)  # three equal logits held
    everything = distill.natural_units(actions, ["alloc_stable", "alloc_hedge"], start)
    assert everything["alloc_volatile"][1] == pytest.approx(0.25)  # held by default
    assert distill._held({"allocation_buckets": ["hedge", "stable"]}) == ("hedge", "stable")

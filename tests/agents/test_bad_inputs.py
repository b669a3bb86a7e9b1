"""Bad input, every subcommand: exit code 2, one message naming it, no traceback, nothing written.

The table below is what a new user gets wrong: configs and ``--set`` values, environment
keywords, scenario files, policy specs, run directories, schedule and state-table files
(truncated, binary, not UTF-8, the wrong shape), output paths and numeric options. Each case
runs ``main([...])`` in-process and asserts exit code 2, that stderr names the field or file
(the strings expected), that there is no traceback, and that a validation failure wrote
nothing: every case's fresh output path is ``NEW = <tmp>/new/out``, and ``<tmp>/new`` must not
exist afterwards (not even the folder a lock file would have needed).
"""

from __future__ import annotations

import errno
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from fundgym.agents.cli import guards, main
from fundgym.agents.cli import levers as levers_cli
from fundgym.agents.config import DEFAULT_TRAIN_CONFIG, dump_config, load_config
from fundgym.agents.policies.runs import FORMAT, FORMAT_VERSION
from fundgym.envs.resources import SCENARIO_DIR
from tests.tiny_runs import TINY_TRAIN

ROOT = Path(__file__).resolve().parents[2]
WICK = (SCENARIO_DIR / "venue_flash_wick.yaml").read_text()
BINARY = bytes(range(256)) * 4
LATIN1 = "name: café\ndescription: x\n".encode("latin-1")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _schedule_meta(**changes: object) -> dict[str, object]:
    meta: dict[str, object] = {
        "schema_version": "1",
        "kind": "fundgym.schedule",
        "controlled": ["mmr"],
        "env": {"n_accounts": 32},
    }
    meta.update(changes)
    return meta


def _schedule_csv(meta: dict[str, object], body: str) -> str:
    return "# fundgym-schedule: " + json.dumps(meta) + "\n" + body


def _table(**changes: object) -> str:
    table: dict[str, object] = {
        "schema_version": "1",
        "kind": "fundgym.state_table",
        "controlled": ["mmr"],
        "env": {"n_accounts": 32},
        "features": [{"name": "vol_short", "obs_index": 0, "edges": ["-inf", 0.5, "inf"]}],
        "cells": [{"bin": [0], "n": 1, "action": [0.0]}, {"bin": [1], "n": 1, "action": [0.5]}],
    }
    table.update(changes)
    return json.dumps(table)


def _fake_run(path: Path, config: str, files: dict[str, bytes], **manifest: object) -> None:
    """A run directory laid out as `fundgym train` writes it, with ``best/`` holding ``files``."""
    (path / "best").mkdir(parents=True)
    (path / "config.yaml").write_text(config)
    for name, data in files.items():
        (path / "best" / name).write_bytes(data)
    doc: dict[str, object] = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "algo": "ppo",
        "config_sha256": _sha(config.encode()),
        "files": {name: _sha(data) for name, data in files.items()},
    }
    doc.update(manifest)
    (path / "best" / "manifest.json").write_text(json.dumps(doc))


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The inputs every case reads: one workspace, never modified by a failing command."""
    ws = tmp_path_factory.mktemp("bad_inputs")
    (ws / "afile").write_text("a user's notes\n")
    (ws / "binary.bin").write_bytes(BINARY)
    (ws / "dir").mkdir()
    (ws / "notes").mkdir()
    (ws / "notes" / "keep.txt").write_text("unrelated\n")
    evaluation = ws / "evaluation"
    evaluation.mkdir()
    for name in ("config.yaml", "metrics.csv", "summary.json"):
        (evaluation / name).write_text("{}\n")

    # configs
    (ws / "binary.yaml").write_bytes(BINARY)
    (ws / "latin1.yaml").write_bytes(LATIN1)
    (ws / "not_yaml.yaml").write_text("a: [unclosed\n")
    (ws / "list.yaml").write_text("- 1\n- 2\n")
    (ws / "cfg_bad_algo.yaml").write_text(f"defaults: {DEFAULT_TRAIN_CONFIG}\nalgo: dqn\n")

    # scenario files
    (ws / "scn_negative.yaml").write_text(WICK.replace("initial: 65760", "initial: -5"))
    (ws / "scn_unknown_key.yaml").write_text(WICK + "volcano: 3\n")
    (ws / "scn_seed_true.yaml").write_text(WICK.replace("seed: 2026", "seed: true"))
    (ws / "scn_list.yaml").write_text("- a\n- b\n")

    # schedules
    sched = ws / "sched"
    sched.mkdir()
    row = "step,action_mmr\n0,0.5\n"
    (sched / "truncated.json").write_text('{"kind": "fundgym.schedule", "sche')
    (sched / "binary.csv").write_bytes(BINARY)
    (sched / "latin1.csv").write_bytes(b'# fundgym-schedule: {"x": "caf\xe9"}\n')
    (sched / "empty.csv").write_text("")
    (sched / "list.json").write_text("[1, 2]")
    (sched / "other_kind.json").write_text(json.dumps(_schedule_meta(kind="other")))
    (sched / "version.json").write_text(json.dumps(_schedule_meta(schema_version="9")))
    (sched / "bad_meta.csv").write_text("# fundgym-schedule: {not json\nstep\n0\n")
    (sched / "torn.csv").write_text(_schedule_csv(_schedule_meta(), row + "1\n"))
    (sched / "word.csv").write_text(_schedule_csv(_schedule_meta(), "step,action_mmr\n0,high\n"))
    (sched / "nan.csv").write_text(_schedule_csv(_schedule_meta(), "step,action_mmr\n0,nan\n"))
    (sched / "rows.json").write_text(json.dumps({**_schedule_meta(), "rows": "all"}))
    (sched / "lever.csv").write_text(_schedule_csv(_schedule_meta(controlled=["volcano"]), row))
    (sched / "no_action.csv").write_text(_schedule_csv(_schedule_meta(), "step,mmr\n0,0.03\n"))
    (sched / "env_list.csv").write_text(_schedule_csv(_schedule_meta(env=[1]), row))
    (sched / "env_bad.csv").write_text(_schedule_csv(_schedule_meta(env={"n_accounts": -5}), row))

    # state tables
    tables = ws / "tables"
    tables.mkdir()
    (tables / "truncated.json").write_text(_table()[:40])
    (tables / "binary.json").write_bytes(BINARY)
    (tables / "latin1.json").write_bytes(b'{"kind": "caf\xe9"}')
    (tables / "other_kind.json").write_text(_table(kind="fundgym.schedule"))
    (tables / "version.json").write_text(_table(schema_version="0"))
    (tables / "cells.json").write_text(_table(cells=[{"bin": [0], "n": 1, "action": [0.0]}]))
    edges = [{"name": "vol_short", "obs_index": 0, "edges": ["-inf", 0.5, 0.1, "inf"]}]
    (tables / "edges.json").write_text(_table(features=edges))
    big = [{"bin": [0], "n": 1, "action": [3.0]}, {"bin": [1], "n": 1, "action": [0.5]}]
    (tables / "action.json").write_text(_table(cells=big))
    (tables / "env_bad.json").write_text(_table(env={"decision_minutes": 0}))

    # run directories
    config = dump_config(load_config(DEFAULT_TRAIN_CONFIG, TINY_TRAIN))
    runs = ws / "runs"
    runs.mkdir()
    (runs / "no_config" / "best").mkdir(parents=True)
    (runs / "no_model").mkdir()
    (runs / "no_model" / "config.yaml").write_text(config)
    (runs / "legacy").mkdir()
    (runs / "legacy" / "config.yaml").write_text(config)
    (runs / "legacy" / "best_model.zip").write_bytes(b"PK")
    (runs / "legacy" / "best_vecnormalize.pkl").write_bytes(b"\x80\x04")
    model = {"policy.pt": b"not a zip of tensors", "normalize.npz": b"not arrays"}
    _fake_run(runs / "not_tensors", config, model)
    _fake_run(runs / "no_stats", config, {"policy.pt": b"x"})
    _fake_run(runs / "changed_config", config, model, config_sha256="0" * 64)
    _fake_run(runs / "hash", config, model)
    (runs / "hash" / "best" / "policy.pt").write_bytes(b"tampered")
    _fake_run(runs / "listed_missing", config, model)
    (runs / "listed_missing" / "best" / "normalize.npz").unlink()
    _fake_run(runs / "other_format", config, model, format="pytorch-lightning")
    _fake_run(runs / "no_manifest", config, model)
    (runs / "no_manifest" / "best" / "manifest.json").unlink()
    _fake_run(runs / "manifest_garbage", config, model)
    (runs / "manifest_garbage" / "best" / "manifest.json").write_bytes(BINARY)
    bad_config = config.replace("algo: ppo", "algo: dqn")
    _fake_run(runs / "bad_config", bad_config, model)
    # an existing run whose config differs from the command's: --resume refuses it
    (runs / "other_run").mkdir()
    (runs / "other_run" / "config.yaml").write_text(config.replace("seed: 0", "seed: 5"))
    (runs / "other_run" / "command.txt").write_text("fundgym train\n")
    return ws


#: ``(id, argv, strings stderr must contain)``; ``{ws}``: the workspace, ``{new}``: an output
#: path that does not exist (nor does its parent).
CASES: list[tuple[str, list[str], list[str]]] = [
    # ---- train: configs, --set (training keys and env keywords), seeds, run directories
    ("train-env-scenario-unknown", ["train", "--set", "env.scenario=no_such", "--out", "{new}"],
     ["env.scenario = 'no_such'", "library scenario"]),
    ("train-env-scenario-multi-market",
     ["train", "--set", "env.scenario=oct_10_2025_multi", "--out", "{new}"],
     ["env.scenario = 'oct_10_2025_multi'", "markets", "fundgym markets"]),
    ("train-eval-scenario-unknown",
     ["train", "--set", "eval.scenarios=[training, nope]", "--out", "{new}"],
     ["eval.scenarios.1 = 'nope'"]),
    ("train-eval-scenario-invalid-file",
     ["train", "--set", "eval.scenarios=[{ws}/scn_negative.yaml]", "--out", "{new}"],
     ["eval.scenarios.0", "scn_negative.yaml", "price.initial = -5"]),
    ("train-env-scenario-binary-file",
     ["train", "--set", "env.scenario={ws}/binary.yaml", "--out", "{new}"],
     ["env.scenario", "binary.yaml"]),
    ("train-config-missing", ["train", "--config", "{ws}/nowhere.yaml", "--out", "{new}"],
     ["nowhere.yaml: no such config file"]),
    ("train-config-directory", ["train", "--config", "{ws}/dir", "--out", "{new}"],
     ["dir: is a directory"]),
    ("train-config-binary", ["train", "--config", "{ws}/binary.yaml", "--out", "{new}"],
     ["binary.yaml: not UTF-8 text"]),
    ("train-config-latin1", ["train", "--config", "{ws}/latin1.yaml", "--out", "{new}"],
     ["latin1.yaml: not UTF-8 text"]),
    ("train-config-not-yaml", ["train", "--config", "{ws}/not_yaml.yaml", "--out", "{new}"],
     ["not_yaml.yaml: not valid YAML"]),
    ("train-config-list", ["train", "--config", "{ws}/list.yaml", "--out", "{new}"],
     ["list.yaml: <top>", "a mapping of training settings"]),
    ("train-config-bad-algo", ["train", "--config", "{ws}/cfg_bad_algo.yaml", "--out", "{new}"],
     ["cfg_bad_algo.yaml: algo = 'dqn'"]),
    ("train-set-seed-true", ["train", "--set", "seed=true", "--out", "{new}"],
     ["seed = True", "not true/false"]),
    ("train-set-bool-yes", ["train", "--set", "eval.deterministic=yes", "--out", "{new}"],
     ["eval.deterministic = 'yes'", "true or false"]),
    ("train-set-negative-envs", ["train", "--set", "n_envs=-1", "--out", "{new}"],
     ["n_envs = -1"]),
    ("train-set-unknown-key", ["train", "--set", "volcano=1", "--out", "{new}"],
     ["volcano = 1", "unknown key"]),
    ("train-set-env-unknown-key", ["train", "--set", "env.volcano=1", "--out", "{new}"],
     ["env.volcano"]),
    ("train-set-env-accounts-zero", ["train", "--set", "env.n_accounts=0", "--out", "{new}"],
     ["env.n_accounts = 0"]),
    ("train-set-env-fixed-out-of-range", ["train", "--set", "env.fixed.mmr=5", "--out", "{new}"],
     ["env.fixed.mmr = 5"]),
    ("train-set-env-controlled-unknown",
     ["train", "--set", "env.controlled=[volcano]", "--out", "{new}"], ["volcano"]),
    ("train-set-env-decision-string",
     ["train", "--set", "env.decision_minutes=soon", "--out", "{new}"],
     ["env.decision_minutes = 'soon'"]),
    ("train-set-no-equals", ["train", "--set", "n_envs", "--out", "{new}"],
     ["--set 'n_envs'", "KEY.PATH=VALUE"]),
    ("train-set-bad-yaml", ["train", "--set", "n_envs=[1", "--out", "{new}"],
     ["--set 'n_envs=[1'", "not valid YAML"]),
    ("train-seed-negative", ["train", "--seed", "-1", "--out", "{new}"], ["--seed", "got -1"]),
    ("train-seed-not-int", ["train", "--seed", "seven", "--out", "{new}"],
     ["--seed", "'seven'"]),
    ("train-seeds-repeated", ["train", "--seeds", "1,1", "--out", "{new}"],
     ["--seeds", "'1,1'"]),
    ("train-out-file", ["train", "--out", "{ws}/afile"], ["--out", "afile: is a file"]),
    ("train-out-inside-file", ["train", "--out", "{ws}/afile/run"],
     ["afile is a file, so nothing can be created inside it"]),
    ("train-out-unrelated-dir", ["train", "--out", "{ws}/notes"],
     ["--out", "notes", "not a fundgym training run directory", "--force"]),
    ("train-out-root", ["train", "--out", "/"], ["--out /", "not an output path"]),
    ("train-resume-other-config", ["train", "--out", "{ws}/runs/other_run", "--resume"],
     ["other_run/config.yaml differs from the config given"]),
    ("train-existing-run", ["train", "--out", "{ws}/runs/other_run"],
     ["other_run already holds a run", "--resume"]),
    # ---- evaluate: numbers, policies, run directories, schedules, tables, scenarios, outputs
    ("eval-episodes-zero", ["evaluate", "--policy", "rule", "--episodes", "0", "--out", "{new}"],
     ["--episodes must be >= 1, got 0"]),
    ("eval-search-episodes-zero",
     ["evaluate", "--policy", "rule", "--search-episodes", "0", "--out", "{new}"],
     ["--search-episodes must be >= 1, got 0"]),
    ("eval-workers-zero", ["evaluate", "--policy", "rule", "--workers", "0", "--out", "{new}"],
     ["--workers must be >= 1, got 0"]),
    ("eval-seed-negative", ["evaluate", "--policy", "rule", "--seed", "-4", "--out", "{new}"],
     ["--seed", "got -4"]),
    ("eval-episodes-not-int",
     ["evaluate", "--policy", "rule", "--episodes", "2.5", "--out", "{new}"],
     ["--episodes", "'2.5'"]),
    ("eval-preset-unknown", ["evaluate", "--policy", "static:ftx", "--out", "{new}"],
     ["unknown preset 'ftx'"]),
    ("eval-static-not-number", ["evaluate", "--policy", "static:mmr=high", "--out", "{new}"],
     ["mmr = 'high' is not a number"]),
    ("eval-static-out-of-range", ["evaluate", "--policy", "static:mmr=5", "--out", "{new}"],
     ["static:mmr=5", "mmr"]),
    ("eval-static-unknown-lever", ["evaluate", "--policy", "static:volcano=1", "--out", "{new}"],
     ["unknown parameter 'volcano'"]),
    ("eval-policy-twice",
     ["evaluate", "--policy", "rule", "--policy", "rule", "--out", "{new}"],
     ["policy 'rule' given twice"]),
    ("eval-policy-nothing", ["evaluate", "--policy", "{ws}/nowhere", "--out", "{new}"],
     ["nowhere", "not a run directory"]),
    ("eval-run-no-config", ["evaluate", "--policy", "{ws}/runs/no_config", "--out", "{new}"],
     ["no_config has no config.yaml"]),
    ("eval-run-no-model", ["evaluate", "--policy", "{ws}/runs/no_model", "--out", "{new}"],
     ["no_model/final: missing"]),
    ("eval-run-legacy", ["evaluate", "--policy", "{ws}/runs/legacy", "--out", "{new}"],
     ["legacy: written by an older fundgym", "pickle"]),
    ("eval-run-not-tensors",
     ["evaluate", "--policy", "{ws}/runs/not_tensors", "--out", "{new}"],
     ["not_tensors/best/policy.pt: cannot be read as plain tensors"]),
    ("eval-run-no-stats", ["evaluate", "--policy", "{ws}/runs/no_stats", "--out", "{new}"],
     ["no_stats/best/normalize.npz: missing from"]),
    ("eval-run-changed-config",
     ["evaluate", "--policy", "{ws}/runs/changed_config", "--out", "{new}"],
     ["changed_config/config.yaml: differs from the config"]),
    ("eval-run-hash", ["evaluate", "--policy", "{ws}/runs/hash", "--out", "{new}"],
     ["hash/best/policy.pt: SHA-256 differs"]),
    ("eval-run-listed-missing",
     ["evaluate", "--policy", "{ws}/runs/listed_missing", "--out", "{new}"],
     ["listed_missing/best/normalize.npz: missing"]),
    ("eval-run-other-format",
     ["evaluate", "--policy", "{ws}/runs/other_format", "--out", "{new}"],
     ["other_format/best/manifest.json: not a fundgym model manifest"]),
    ("eval-run-no-manifest",
     ["evaluate", "--policy", "{ws}/runs/no_manifest", "--out", "{new}"],
     ["no_manifest/best/manifest.json: missing"]),
    ("eval-run-manifest-garbage",
     ["evaluate", "--policy", "{ws}/runs/manifest_garbage", "--out", "{new}"],
     ["manifest_garbage/best/manifest.json: not a readable manifest"]),
    ("eval-run-bad-config", ["evaluate", "--policy", "{ws}/runs/bad_config", "--out", "{new}"],
     ["bad_config/config.yaml", "algo = 'dqn'"]),
    ("eval-schedule-missing", ["evaluate", "--policy", "schedule:{ws}/none.csv", "--out", "{new}"],
     ["none.csv does not exist"]),
    ("eval-schedule-truncated",
     ["evaluate", "--policy", "schedule:{ws}/sched/truncated.json", "--out", "{new}"],
     ["truncated.json: not a readable fundgym schedule"]),
    ("eval-schedule-binary",
     ["evaluate", "--policy", "schedule:{ws}/sched/binary.csv", "--out", "{new}"],
     ["binary.csv: not UTF-8 text"]),
    ("eval-schedule-latin1",
     ["evaluate", "--policy", "schedule:{ws}/sched/latin1.csv", "--out", "{new}"],
     ["latin1.csv: not UTF-8 text"]),
    ("eval-schedule-empty",
     ["evaluate", "--policy", "schedule:{ws}/sched/empty.csv", "--out", "{new}"],
     ["empty.csv: not a readable fundgym schedule"]),
    ("eval-schedule-list",
     ["evaluate", "--policy", "schedule:{ws}/sched/list.json", "--out", "{new}"],
     ["list.json: not a fundgym schedule (top level is not a mapping)"]),
    ("eval-schedule-kind",
     ["evaluate", "--policy", "schedule:{ws}/sched/other_kind.json", "--out", "{new}"],
     ["other_kind.json: kind = 'other'"]),
    ("eval-schedule-version",
     ["evaluate", "--policy", "schedule:{ws}/sched/version.json", "--out", "{new}"],
     ["version.json: schema_version = '9'"]),
    ("eval-schedule-bad-meta",
     ["evaluate", "--policy", "schedule:{ws}/sched/bad_meta.csv", "--out", "{new}"],
     ["bad_meta.csv: line 1", "not valid JSON"]),
    ("eval-schedule-torn-row",
     ["evaluate", "--policy", "schedule:{ws}/sched/torn.csv", "--out", "{new}"],
     ["torn.csv: line 4 has 1 fields, the header 2"]),
    ("eval-schedule-word",
     ["evaluate", "--policy", "schedule:{ws}/sched/word.csv", "--out", "{new}"],
     ["word.csv: line 3, action_mmr = 'high': expected a number"]),
    ("eval-schedule-nan",
     ["evaluate", "--policy", "schedule:{ws}/sched/nan.csv", "--out", "{new}"],
     ["nan.csv: row 0: action_mmr = nan"]),
    ("eval-schedule-rows",
     ["evaluate", "--policy", "schedule:{ws}/sched/rows.json", "--out", "{new}"],
     ["rows.json: rows = 'all'"]),
    ("eval-schedule-lever",
     ["evaluate", "--policy", "schedule:{ws}/sched/lever.csv", "--out", "{new}"],
     ["lever.csv: controlled = ['volcano']"]),
    ("eval-schedule-no-action",
     ["evaluate", "--policy", "schedule:{ws}/sched/no_action.csv", "--out", "{new}"],
     ["no_action.csv: column 'action_mmr' is missing"]),
    ("eval-schedule-env-list",
     ["evaluate", "--policy", "schedule:{ws}/sched/env_list.csv", "--out", "{new}"],
     ["env_list.csv: env = [1]"]),
    ("eval-schedule-env-bad",
     ["evaluate", "--policy", "schedule:{ws}/sched/env_bad.csv", "--out", "{new}"],
     ["env_bad.csv: env.n_accounts = -5"]),
    ("eval-table-truncated",
     ["evaluate", "--policy", "table:{ws}/tables/truncated.json", "--out", "{new}"],
     ["truncated.json: not valid JSON"]),
    ("eval-table-binary",
     ["evaluate", "--policy", "table:{ws}/tables/binary.json", "--out", "{new}"],
     ["binary.json: not UTF-8 text"]),
    ("eval-table-latin1",
     ["evaluate", "--policy", "table:{ws}/tables/latin1.json", "--out", "{new}"],
     ["latin1.json: not UTF-8 text"]),
    ("eval-table-kind",
     ["evaluate", "--policy", "table:{ws}/tables/other_kind.json", "--out", "{new}"],
     ["other_kind.json: kind = 'fundgym.schedule'"]),
    ("eval-table-version",
     ["evaluate", "--policy", "table:{ws}/tables/version.json", "--out", "{new}"],
     ["version.json: schema_version = '0'"]),
    ("eval-table-cells",
     ["evaluate", "--policy", "table:{ws}/tables/cells.json", "--out", "{new}"],
     ["cells.json: cells: 1 cells, but the edges make 2"]),
    ("eval-table-edges",
     ["evaluate", "--policy", "table:{ws}/tables/edges.json", "--out", "{new}"],
     ["edges.json: features[0].edges"]),
    ("eval-table-action",
     ["evaluate", "--policy", "table:{ws}/tables/action.json", "--out", "{new}"],
     ["action.json: cells[0].action = [3.0]"]),
    ("eval-table-env-bad",
     ["evaluate", "--policy", "table:{ws}/tables/env_bad.json", "--out", "{new}"],
     ["env_bad.json: env.decision_minutes = 0"]),
    ("eval-scenario-unknown",
     ["evaluate", "--policy", "rule", "--scenarios", "mars_2030", "--out", "{new}"],
     ["unknown scenario 'mars_2030'"]),
    ("eval-scenario-binary",
     ["evaluate", "--policy", "rule", "--scenarios", "{ws}/binary.yaml", "--out", "{new}"],
     ["--scenarios", "binary.yaml", "not UTF-8 text"]),
    ("eval-scenario-unknown-key",
     ["evaluate", "--policy", "rule", "--scenarios", "{ws}/scn_unknown_key.yaml", "--out",
      "{new}"],
     ["scn_unknown_key.yaml: volcano"]),
    ("eval-scenario-empty", ["evaluate", "--policy", "rule", "--scenarios", ",", "--out", "{new}"],
     ["--scenarios: no scenario given"]),
    ("eval-scenario-multi-market",
     ["evaluate", "--policy", "rule", "--scenarios", "oct_10_2025_multi", "--out", "{new}"],
     ["--scenarios", "oct_10_2025_multi", "markets", "fundgym markets"]),
    ("eval-config-missing",
     ["evaluate", "--policy", "rule", "--config", "{ws}/none.yaml", "--out", "{new}"],
     ["--config", "none.yaml does not exist"]),
    ("eval-config-binary",
     ["evaluate", "--policy", "rule", "--config", "{ws}/binary.yaml", "--out", "{new}"],
     ["--config", "binary.yaml: not UTF-8 text"]),
    ("eval-config-not-yaml",
     ["evaluate", "--policy", "rule", "--config", "{ws}/not_yaml.yaml", "--out", "{new}"],
     ["--config", "not_yaml.yaml: not valid YAML"]),
    ("eval-out-file", ["evaluate", "--policy", "rule", "--out", "{ws}/afile"],
     ["--out", "afile: is a file"]),
    ("eval-out-inside-file", ["evaluate", "--policy", "rule", "--out", "{ws}/afile/x"],
     ["afile is a file"]),
    ("eval-out-unrelated-dir", ["evaluate", "--policy", "rule", "--out", "{ws}/notes"],
     ["notes: an existing directory that is not a fundgym evaluation directory", "--force"]),
    ("eval-out-existing-evaluation", ["evaluate", "--policy", "rule", "--out", "{ws}/evaluation"],
     ["evaluation: already holds an evaluation", "--overwrite"]),
    ("eval-cache-dir-file",
     ["evaluate", "--policy", "rule", "--cache-dir", "{ws}/afile", "--out", "{new}"],
     ["--cache-dir", "afile: is a file"]),
    # ---- calibrate
    ("cal-seeds-zero", ["calibrate", "--seeds", "0", "--out", "{new}"],
     ["--seeds must be >= 1, got 0"]),
    ("cal-seeds-not-int", ["calibrate", "--seeds", "2.5", "--out", "{new}"],
     ["--seeds", "'2.5'"]),
    ("cal-accounts-zero", ["calibrate", "--accounts", "0", "--out", "{new}"],
     ["--accounts must be >= 1, got 0"]),
    ("cal-seed-negative", ["calibrate", "--seed", "-1", "--out", "{new}"],
     ["--seed", "got -1"]),
    ("cal-check-unknown", ["calibrate", "--check", "nope", "--out", "{new}"],
     ["--check 'nope': no such check", "hyperliquid_below_bankruptcy"]),
    ("cal-scenario-unchecked", ["calibrate", "--scenarios", "calm", "--out", "{new}"],
     ["--scenarios 'calm': no check runs on it", "oct_10_2025"]),
    # ---- export
    ("export-no-scenario", ["export", "--policy", "{ws}/runs/hash", "--format", "csv", "--out",
                            "{new}"], ["--format csv/json needs --scenario"]),
    ("export-static-policy", ["export", "--policy", "static:dydx", "--format", "onnx", "--out",
                              "{new}"], ["--policy 'static:dydx'", "run directory"]),
    ("export-policy-missing", ["export", "--policy", "{ws}/nowhere", "--format", "onnx", "--out",
                               "{new}"], ["nowhere", "not a run directory"]),
    ("export-seed-negative", ["export", "--policy", "{ws}/runs/hash", "--format", "onnx",
                              "--seed", "-1", "--out", "{new}"], ["--seed", "got -1"]),
    ("export-bins-zero", ["export", "--policy", "{ws}/runs/hash", "--format", "table", "--bins",
                          "0", "--out", "{new}"], ["--bins must be >= 1, got 0"]),
    ("export-episodes-zero", ["export", "--policy", "{ws}/runs/hash", "--format", "table",
                              "--episodes", "0", "--out", "{new}"],
     ["--episodes must be >= 1, got 0"]),
    ("export-format-unknown", ["export", "--policy", "{ws}/runs/hash", "--format", "xlsx",
                               "--out", "{new}"], ["--format", "'xlsx'"]),
    ("export-scenario-unknown", ["export", "--policy", "{ws}/runs/hash", "--format", "csv",
                                 "--scenario", "mars_2030", "--out", "{new}"],
     ["unknown scenario 'mars_2030'"]),
    ("export-scenario-several", ["export", "--policy", "{ws}/runs/hash", "--format", "json",
                                 "--scenario", "crashes", "--out", "{new}"],
     ["--scenario 'crashes': names 7 scenarios"]),
    ("export-out-unrelated-file", ["export", "--policy", "{ws}/runs/hash", "--format", "onnx",
                                   "--out", "{ws}/afile"],
     ["afile: an existing file that is not a fundgym ONNX policy", "--force"]),
    ("export-schedule-onto-unrelated", ["export", "--policy", "{ws}/runs/hash", "--format",
                                        "csv", "--scenario", "calm", "--out", "{ws}/afile"],
     ["afile: an existing file that is not a fundgym schedule file"]),
    ("export-out-directory", ["export", "--policy", "{ws}/runs/hash", "--format", "onnx",
                              "--out", "{ws}/dir"], ["dir: is a directory"]),
    ("export-out-inside-file", ["export", "--policy", "{ws}/runs/hash", "--format", "onnx",
                                "--out", "{ws}/afile/p.onnx"], ["afile is a file"]),
    ("export-table-out-csv", ["export", "--policy", "{ws}/runs/hash", "--format", "table",
                              "--out", "{new}.csv"], ["the table is JSON"]),
    ("export-run-hash", ["export", "--policy", "{ws}/runs/hash", "--format", "onnx", "--out",
                         "{new}"], ["hash/best/policy.pt: SHA-256 differs"]),
    ("export-run-final-missing", ["export", "--policy", "{ws}/runs/hash", "--format", "onnx",
                                  "--model", "final", "--out", "{new}"],
     ["hash/final: missing"]),
    # ---- simulate
    ("sim-accounts-zero", ["simulate", "--accounts", "0", "--out", "{new}"],
     ["--accounts must be >= 1, got 0"]),
    ("sim-fund-frac-negative", ["simulate", "--fund-frac", "-1", "--out", "{new}"],
     ["--fund-frac must lie in [0, 10], got -1.0"]),
    ("sim-fund-frac-nan", ["simulate", "--fund-frac", "nan", "--out", "{new}"],
     ["--fund-frac must lie in [0, 10], got nan"]),
    ("sim-seed-negative", ["simulate", "--seed", "-2", "--out", "{new}"], ["--seed", "got -2"]),
    ("sim-scenario-unknown", ["simulate", "--scenario", "nowhere_2031", "--out", "{new}"],
     ["--scenario", "unknown scenario 'nowhere_2031'"]),
    ("sim-scenario-missing-file", ["simulate", "--scenario", "{ws}/none.yaml", "--out", "{new}"],
     ["none.yaml does not exist"]),
    ("sim-scenario-negative", ["simulate", "--scenario", "{ws}/scn_negative.yaml", "--out",
                               "{new}"], ["scn_negative.yaml: price.initial = -5"]),
    ("sim-scenario-seed-true", ["simulate", "--scenario", "{ws}/scn_seed_true.yaml", "--out",
                                "{new}"], ["scn_seed_true.yaml: seed = True"]),
    ("sim-scenario-list", ["simulate", "--scenario", "{ws}/scn_list.yaml", "--out", "{new}"],
     ["scn_list.yaml"]),
    ("sim-scenario-not-yaml", ["simulate", "--scenario", "{ws}/not_yaml.yaml", "--out", "{new}"],
     ["not_yaml.yaml", "not valid YAML"]),
    ("sim-scenario-latin1", ["simulate", "--scenario", "{ws}/latin1.yaml", "--out", "{new}"],
     ["latin1.yaml", "not UTF-8 text"]),
    ("sim-out-file", ["simulate", "--out", "{ws}/afile"], ["--out", "afile: is a file"]),
    ("sim-out-unrelated-dir", ["simulate", "--out", "{ws}/notes"],
     ["not a fundgym simulation directory", "--force"]),
    # ---- scenarios
    ("scn-sample-seed-negative", ["scenarios", "sample", "calm", "--seed", "-1", "--out",
                                  "{new}.csv"], ["--seed", "got -1"]),
    ("scn-sample-unknown", ["scenarios", "sample", "mars_2030", "--out", "{new}.csv"],
     ["unknown scenario 'mars_2030'"]),
    ("scn-sample-binary", ["scenarios", "sample", "{ws}/binary.yaml", "--out", "{new}.csv"],
     ["binary.yaml", "not UTF-8 text"]),
    ("scn-sample-unrelated-file", ["scenarios", "sample", "calm", "--out", "{ws}/afile"],
     ["afile: an existing file that is not a fundgym sampled path", "--force"]),
    ("scn-sample-inside-file", ["scenarios", "sample", "calm", "--out", "{ws}/afile/x.csv"],
     ["afile is a file"]),
    ("scn-plot-out-directory", ["scenarios", "plot", "calm", "--out", "{ws}/dir"],
     ["dir: is a directory"]),
    ("scn-plot-unrelated-file", ["scenarios", "plot", "calm", "--out", "{ws}/binary.bin"],
     ["binary.bin: an existing file that is not a fundgym plot"]),
    ("scn-action-unknown", ["scenarios", "draw"], ["'draw'"]),
    # ---- bench
    ("bench-steps-zero", ["bench", "core", "--steps", "0"], ["--steps must be >= 1, got 0"]),
    ("bench-repeats-zero", ["bench", "core", "--repeats", "0"], ["--repeats must be >= 1, got 0"]),
    ("bench-seed-negative", ["bench", "core", "--seed", "-1"], ["--seed", "got -1"]),
    ("bench-regime-unknown", ["bench", "core", "--regimes", "calm"],
     ["unknown regime 'calm'; allowed: quiet, crash"]),
    ("bench-accounts-word", ["bench", "core", "--accounts", "ten"],
     ["expected comma-separated integers, got 'ten'"]),
    ("bench-accounts-zero", ["bench", "full", "--accounts", "0"], ["--accounts", "'0'"]),
    ("bench-json-unrelated", ["bench", "core", "--json", "{ws}/afile"],
     ["--json", "afile: an existing file that is not a fundgym benchmark file"]),
    ("bench-json-inside-file", ["bench", "env", "--json", "{ws}/afile/b.json"],
     ["--json", "afile is a file"]),
    ("bench-full-scenario-unknown", ["bench", "full", "--scenarios", "mars"],
     ["--scenarios", "unknown scenario 'mars'"]),
    ("bench-env-steps-zero", ["bench", "env", "--steps", "0"], ["--steps must be >= 1, got 0"]),
    ("bench-env-envs-zero", ["bench", "env", "--envs", "0"], ["--envs must be >= 1, got 0"]),
    ("bench-env-ppo-steps-negative", ["bench", "env", "--ppo-steps", "-1"],
     ["--ppo-steps must be >= 0, got -1"]),
    ("bench-env-threads-zero", ["bench", "env", "--threads", "0"],
     ["--threads must be >= 1, got 0"]),
    ("bench-full-mode-unknown", ["bench", "full", "--liquidation-modes", "partial,ftx"],
     ["--liquidation-modes: unknown mode 'ftx'", "dydx_v4"]),
    ("bench-full-adl-unknown", ["bench", "full", "--adl-policy", "queue"],
     ["--adl-policy: unknown rule 'queue'", "water_filling"]),
    ("bench-full-vault-partial", ["bench", "full", "--vault-to-oi-frac", "0.02"],
     ["--vault-to-oi-frac", "drop 'partial'"]),
    ("bench-full-vault-range", ["bench", "full", "--vault-to-oi-frac", "-1",
                                "--liquidation-modes", "hyperliquid"],
     ["--vault-to-oi-frac: -1.0 is not in [0, 10]"]),
    ("bench-full-share-range", ["bench", "full", "--liquidation-fee-fund-share", "2"],
     ["--liquidation-fee-fund-share: 2.0 is not in [0, 1]"]),
    # ---- demo
    ("demo-episodes-zero", ["demo", "--episodes", "0", "--out", "{new}"],
     ["--episodes must be >= 1, got 0"]),
    ("demo-workers-zero", ["demo", "--workers", "0", "--out", "{new}"],
     ["--workers must be >= 1, got 0"]),
    ("demo-seed-negative", ["demo", "--seed", "-1", "--out", "{new}"], ["--seed", "got -1"]),
    ("demo-out-file", ["demo", "--out", "{ws}/afile"], ["--out", "afile: is a file"]),
    ("demo-out-unrelated-dir", ["demo", "--out", "{ws}/notes"],
     ["not a fundgym demo directory", "--force"]),
    # ---- the top level
    ("top-unknown-command", ["fly"], ["'fly'"]),
]  # fmt: skip


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """``main(argv)``'s exit code (argparse's own errors included) and stderr."""
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse: usage errors exit 2 through SystemExit
        code = exc.code if isinstance(exc.code, int) else 1
    return code, capsys.readouterr().err


def test_the_table_covers_every_subcommand_and_sixty_inputs():
    commands = {argv[0] for _, argv, _ in CASES}
    assert {"train", "evaluate", "export", "simulate", "scenarios", "bench", "demo"} <= commands
    assert len(CASES) >= 60
    assert len({case_id for case_id, _, _ in CASES}) == len(CASES)


@pytest.mark.parametrize(("argv", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_bad_input_is_one_message_with_exit_code_2(ws, tmp_path, capsys, argv, expected):
    new = tmp_path / "new" / "out"
    before = sorted(p.relative_to(ws) for p in ws.rglob("*"))
    args = [a.format(ws=ws, new=new) for a in argv]
    code, err = run_main(args, capsys)
    assert code == 2, err
    assert "Traceback" not in err
    for text in expected:
        assert text.format(ws=ws) in err, (text, err)
    assert not (tmp_path / "new").exists()  # nothing written, not even a folder
    assert sorted(p.relative_to(ws) for p in ws.rglob("*")) == before  # inputs untouched


def test_the_inputs_named_in_messages_are_left_as_they_were(ws, capsys):
    before = (ws / "afile").read_text()
    for argv in (
        ["train", "--out", str(ws / "afile")],
        ["bench", "core", "--json", str(ws / "afile")],
    ):
        assert run_main(argv, capsys)[0] == 2
    assert (ws / "afile").read_text() == before
    assert (ws / "notes" / "keep.txt").read_text() == "unrelated\n"


def test_a_read_only_output_folder_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    """What the OS reports for a folder a (non-root) user may not write: refused, named."""
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = guards.os.access
    monkeypatch.setattr(
        guards.os, "access", lambda p, mode: Path(p) != locked and real_access(p, mode)
    )
    for argv in (
        ["simulate", "--out", str(locked / "sim")],
        ["evaluate", "--policy", "rule", "--out", str(locked / "e")],
        ["scenarios", "sample", "calm", "--out", str(locked / "x.csv")],
        ["train", "--out", str(locked)],
    ):
        code, err = run_main(argv, capsys)
        assert code == 2, argv
        assert f"{locked} is not writable" in err and "Traceback" not in err
    assert list(locked.iterdir()) == []


def test_a_full_disk_is_one_message_naming_the_file(capsys, monkeypatch):
    def full(_args: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device", "/data/runs/x/metrics.csv")

    monkeypatch.setattr(levers_cli, "main", full)
    code, err = run_main(["levers"], capsys)
    assert code == 2
    assert err.startswith("fundgym levers: /data/runs/x/metrics.csv: No space left on device")
    assert "free some space" in err and "Traceback" not in err


def test_an_interrupt_exits_130_and_a_bug_keeps_its_traceback(capsys, monkeypatch):
    def interrupted(_args: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(levers_cli, "main", interrupted)
    assert run_main(["levers"], capsys) == (130, "\nfundgym levers: interrupted\n")

    def bug(_args: object) -> int:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(levers_cli, "main", bug)
    with pytest.raises(ZeroDivisionError):  # not mapped: the console shows its traceback
        main(["levers"])


def test_debug_shows_the_traceback_of_an_expected_error(capsys):
    code, err = run_main(["--debug", "simulate", "--accounts", "0"], capsys)
    assert code == 2
    assert "Traceback" in err and "UsageError" in err
    assert err.rstrip().endswith("fundgym simulate: --accounts must be >= 1, got 0")
    code, err = run_main(["simulate", "--accounts", "0", "--debug"], capsys)  # after it too
    assert code == 2 and "Traceback" in err


def test_the_console_command_exits_2_without_a_traceback(tmp_path):
    """The process itself, not only ``main``: simulate's bad arguments were exit code 1."""
    proc = subprocess.run(
        [sys.executable, "-m", "fundgym.agents.cli", "simulate", "--accounts", "0"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == "fundgym simulate: --accounts must be >= 1, got 0\n"
    assert list(tmp_path.iterdir()) == []


def test_a_hostile_scenario_name_writes_nothing_outside_out(tmp_path, capsys):
    outside = tmp_path / "outside"
    for hostile in (str(outside / "abs"), "../../escape"):
        scenario = tmp_path / "hostile.yaml"
        text = WICK.replace("name: venue_flash_wick", f"name: {json.dumps(hostile)}")
        scenario.write_text(text.replace("horizon_minutes: 180", "horizon_minutes: 120"))
        out = tmp_path / "sim"
        argv = ["simulate", "--scenario", str(scenario), "--accounts", "64", "--out", str(out)]
        assert main(argv) == 0, capsys.readouterr().err
        capsys.readouterr()
        pngs = sorted(p.name for p in out.iterdir() if p.suffix == ".png")
        assert pngs == [guards.safe_name(hostile, "scenario") + ".png"]
        for p in out.iterdir():
            if p.suffix == ".png":
                p.unlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hostile.yaml", "sim"]
    assert not outside.exists()


def test_fundgym_recognises_its_own_outputs_and_force_allows_any(tmp_path):
    kinds = guards.OUTPUT_KINDS
    own = {
        "schedule": ("s.csv", b'# fundgym-schedule: {"kind": "fundgym.schedule"}\nstep\n0\n'),
        "table": ("t.json", b'{\n  "schema_version": "1",\n  "kind": "fundgym.state_table"}'),
        "table_view": ("t.csv", b"vol_short,n,filled_from,mmr\n"),
        "scenario_csv": ("p.csv", b"step,time_min,mark_price,index_price\n0,0,1,1\n"),
        "bench": ("b.json", b'{"machine": "x", "rows": []}'),
        "onnx": ("p.onnx", b"\x08\x07 fundgym_version obs_names param_names"),
    }
    for kind, (name, data) in own.items():
        path = tmp_path / name
        path.write_bytes(data)
        guards.check_output(path, kinds[kind])  # its own kind: replaced without --force
        other = "bench" if kind != "bench" else "schedule"
        with pytest.raises(guards.UsageError, match="--force"):
            guards.check_output(path, kinds[other])
        guards.check_output(path, kinds[other], force=True)
    evaluation, run, sim, demo = (tmp_path / n for n in ("ev", "run", "sim", "demo"))
    for folder, files in (
        (evaluation, ("config.yaml", "metrics.csv", "summary.json")),
        (run, ("config.yaml", "command.txt")),
        (demo, ("ppo", "export")),
    ):
        folder.mkdir()
        for f in files:
            (folder / f).write_text("x")
    sim.mkdir()
    (sim / "config.yaml").write_text("command: fundgym simulate\nseed: 1\n")
    for folder, kind in ((evaluation, "evaluation"), (run, "run"), (sim, "simulation"),
                         (demo, "demo")):  # fmt: skip
        guards.check_output(folder, kinds[kind])
        with pytest.raises(guards.UsageError, match="not a fundgym"):
            guards.check_output(folder, kinds["run" if kind != "run" else "demo"])
    empty = tmp_path / "empty"
    empty.mkdir()
    guards.check_output(empty, kinds["run"])  # an empty folder is anybody's


def test_force_replaces_an_unrelated_file_and_an_own_output_needs_none(tmp_path, capsys):
    target = tmp_path / "notes.csv"
    target.write_text("my notes\n")
    argv = ["scenarios", "sample", "venue_flash_wick", "--out", str(target)]
    assert run_main(argv, capsys)[0] == 2
    assert target.read_text() == "my notes\n"
    assert main([*argv, "--force"]) == 0
    assert target.read_text().startswith("step,time_min,mark_price,")
    assert main(argv) == 0  # now a fundgym sampled path: replaced without --force


@pytest.mark.parametrize(
    ("name", "safe"),
    [
        ("oct_10_2025", "oct_10_2025"),
        ("/etc/passwd", "_etc_passwd"),
        ("../../escape", "_.._escape"),
        (".hidden", "hidden"),
        ("crash 2020: BTC/USD", "crash_2020_BTC_USD"),
        ("///", "scenario"),
        ("", "scenario"),
    ],
)
def test_safe_name_keeps_one_harmless_file_name(name, safe):
    assert guards.safe_name(name, "scenario") == safe
    assert (Path("/out") / guards.safe_name(name, "scenario")).parent == Path("/out")

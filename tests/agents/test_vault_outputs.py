"""The backstop vault and the liquidators through evaluation: records, metrics.csv, config, report.

One small end-to-end run through the environment (64 accounts, the 3-hour flash wick, one
episode per policy): ``static:hyperliquid`` runs HLP's 2.2% vault and no fund,
``static:binance`` a 4.5% fund and no vault. What the run must show is checked against the
environment's own per-step ``info`` and the preset's sizes, not against numbers from the code
under test.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from fundgym.agents import evaluate as ev
from fundgym.agents.cli import main
from fundgym.agents.evaluate.metrics import EPISODE_COLUMNS
from fundgym.agents.policies import build_policy, parse_spec
from fundgym.agents.rollout import first_episodes
from fundgym.envs.exchange_env import InsuranceFundVectorEnv

SCENARIO = "venue_flash_wick"  # 180 minutes: 18 ten-minute decisions
VAULT_COLUMNS = (
    "vault_initial_usd",
    "vault_pnl_usd",
    "vault_pnl_frac",
    "vault_max_drawdown_frac",
    "vault_peak_inventory_usd",
    "vault_takeovers",
    "vault_takeover_usd",
    "liquidator_absorbed_usd",
)


@pytest.fixture(scope="module")
def env_yaml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "env.yaml"
    path.write_text(yaml.safe_dump({"env": {"n_accounts": 64, "decision_minutes": 10}}))
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, env_yaml: Path) -> tuple[Path, Any]:
    out = tmp_path_factory.mktemp("eval") / "out"
    result = ev.evaluate(
        ["static:hyperliquid", "static:binance"],
        [SCENARIO],
        1,
        out,
        seed=3,
        config=env_yaml,
        workers=1,
        progress=False,
        report=True,
        argv=["fundgym", "evaluate", "--vault-test"],
    )
    return out, result


def test_a_record_carries_the_vault_the_environment_reported(env_yaml: Path) -> None:
    spec = parse_spec("static:hyperliquid")
    env_kw = ev.job_env(ev.base_env(env_yaml, [spec]), spec, SCENARIO)
    (rec,) = ev.run_episodes(spec, env_kw, 1, 3, SCENARIO)
    # the same episode stepped by hand: the record holds the environment's per-step info
    env = InsuranceFundVectorEnv(num_envs=1, **env_kw)
    obs, _ = env.reset(seed=3)
    policy = build_policy(spec, tuple(env.config.controlled))
    info = [s.info for s in first_episodes(env, policy, obs)]
    for key in ("vault_pnl_usd", "vault_drawdown_frac", "vault_peak_inventory_usd",
                "vault_takeovers", "vault_takeover_usd", "liquidator_absorbed_usd"):  # fmt: skip
        np.testing.assert_array_equal(getattr(rec, key), [float(i[key][0]) for i in info])
    # HLP's 2.2% of the opening open interest, and no insurance fund
    oi0 = rec.initial_open_interest_usd
    assert rec.initial_vault_usd == pytest.approx(0.022 * oi0, rel=1e-12)
    assert rec.initial_fund_usd == 0.0
    # equity - PnL is the starting capital at every step, not only the first
    equity = np.array([float(i["vault_equity_usd"][0]) for i in info])
    np.testing.assert_allclose(equity - rec.vault_pnl_usd, rec.initial_vault_usd, rtol=1e-9)


def test_metrics_csv_has_the_vault_and_liquidator_columns(run: tuple[Path, Any]) -> None:
    out, result = run
    with (out / "metrics.csv").open() as f:
        rows = {r["policy"]: r for r in csv.DictReader(f)}
    assert list(next(iter(rows.values())))[: len(EPISODE_COLUMNS)] == list(EPISODE_COLUMNS)
    for policy in ("static:hyperliquid", "static:binance"):
        for col in VAULT_COLUMNS:
            assert float(rows[policy][col]) == next(
                r[col] for r in result.rows if r["policy"] == policy
            )
    hl, bn = rows["static:hyperliquid"], rows["static:binance"]
    assert float(hl["vault_initial_usd"]) > 0.0
    # Binance runs no vault: every vault column is 0
    assert all(float(bn[c]) == 0.0 for c in VAULT_COLUMNS if c.startswith("vault_"))
    # Hyperliquid has no fund: it cannot be exhausted, its drawdown is 0 by rule, not NaN
    assert hl["fund_exhausted"] == "False" and float(hl["fund_max_drawdown_frac"]) == 0.0
    assert 0.0 <= float(hl["vault_max_drawdown_frac"]) <= 1.0
    frac = float(hl["vault_pnl_usd"]) / float(hl["vault_initial_usd"])
    assert float(hl["vault_pnl_frac"]) == pytest.approx(frac, rel=1e-12)


def test_config_records_each_policys_vault_and_the_summary_its_metrics(
    run: tuple[Path, Any],
) -> None:
    out, _ = run
    config = yaml.safe_load((out / "config.yaml").read_text())
    policies = {p["name"]: p for p in config["policies"]}
    assert policies["static:hyperliquid"]["vault_to_oi_frac"] == 0.022
    assert policies["static:hyperliquid"]["fund_to_oi_frac"] == 0.0
    assert policies["static:binance"]["vault_to_oi_frac"] == 0.0
    summary = json.loads((out / "summary.json").read_text())
    line = next(r for r in summary["by_policy"] if r["policy"] == "static:hyperliquid")
    for col in VAULT_COLUMNS:
        assert col in line and f"{col}_ci_high" in line
    assert line["p_fund_exhausted"] == 0.0  # no fund is not an exhausted fund


def test_the_report_shows_the_vault_of_the_policy_that_ran_one(run: tuple[Path, Any]) -> None:
    out, _ = run
    md = (out / "report.md").read_text()
    assert "## Backstop vault" in md and "| absorbed by liquidators |" in md
    vault_rows = [
        line
        for line in md.splitlines()
        if line.startswith(("| static:hyperliquid | venue", "| static:binance | venue"))
    ]
    assert [row.split("|")[1].strip() for row in vault_rows] == ["static:hyperliquid"]


def test_a_vault_under_the_partial_engine_is_refused_naming_the_policy(
    env_yaml: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # the evaluation environment runs `partial`, which hands no account to a vault; a preset
    # brings its venue's engine, so only a custom set can ask for this
    spec = parse_spec("static:mmr=0.05,vault_to_oi_frac=0.05")
    with pytest.raises(ev.EvaluateError) as exc:
        ev.job_env(ev.base_env(env_yaml, [spec]), spec, SCENARIO)
    assert str(exc.value).startswith(
        "policy 'static:mmr=0.05,vault_to_oi_frac=0.05' on scenario 'venue_flash_wick': "
        "env.vault_to_oi_frac = 0.05: 0 with liquidation_mode 'partial'"
    )
    out = tmp_path / "ev"
    args = ["evaluate", "--policy", spec.name, "--scenarios", SCENARIO, "--episodes", "1",
            "--config", str(env_yaml), "--out", str(out), "--no-progress"]  # fmt: skip
    assert main(args) == 2
    assert "env.vault_to_oi_frac = 0.05" in capsys.readouterr().err
    assert not out.exists()

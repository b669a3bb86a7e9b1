"""Where jobs run never changes what they compute: the local pool and Ray give the same rows."""

import sys

import pytest
import yaml

from fundgym.agents import evaluate as ev
from fundgym.agents.evaluate.backends import BackendError, check_backend, run_jobs_backend
from fundgym.agents.evaluate.episodes import Job
from fundgym.agents.policies import parse_spec


@pytest.fixture(scope="module")
def jobs(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "env.yaml"
    path.write_text(
        yaml.safe_dump({"env": {"n_accounts": 32, "decision_minutes": 10, "horizon_minutes": 60}})
    )
    specs = [parse_spec("rule"), parse_spec("static:dydx")]
    base = ev.base_env(path, specs)
    return [
        Job(spec, "venue_flash_wick", ev.job_env(base, spec, "venue_flash_wick"), 2, seed, True)
        for spec in specs
        for seed in (3, 40)
    ]


def test_ray_gives_the_local_rows_in_job_order(jobs):
    pytest.importorskip("ray")
    local = run_jobs_backend(jobs, workers=1)
    seen = []
    remote = run_jobs_backend(jobs, workers=2, backend="ray", progress=seen.append)
    assert remote == local
    # each job reported once, and the rows are those of its own policy and seeds
    assert sorted(id(j) for j in seen) == sorted(id(j) for j in jobs)
    for job, rows in zip(jobs, remote, strict=True):
        assert [r["policy"] for r in rows] == [job.spec.name] * 2
        assert [r["seed"] for r in rows] == [job.seed, job.seed + 1]
    # the two seeds of a policy draw different markets: the comparison is not vacuous
    assert local[0] != local[1]


def test_bad_backends_are_refused_before_any_work():
    with pytest.raises(BackendError, match=r"--backend 'dask': allowed \['local', 'ray'\]"):
        check_backend("dask", None)
    with pytest.raises(BackendError, match="--address 'host:6379' needs --backend ray"):
        check_backend("local", "host:6379")
    with pytest.raises(BackendError, match="--backend"):
        run_jobs_backend([], workers=1, backend="dask")


def test_a_missing_ray_names_the_extra(monkeypatch):
    # None in sys.modules makes `import ray` fail as it does where Ray is not installed
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(BackendError, match=r"--backend ray .*pip install fundgym\[ray\]"):
        check_backend("ray", None)

"""Suite-wide test order: the longest files first, so that ``make test`` ends sooner.

``make test`` runs ``pytest -n 2 --dist loadfile --no-loadscope-reorder``: each file runs whole
on one of CI's two workers, handed out in collection order. A long file collected late (the
installed-wheel test, collected last, takes two minutes) starts near the end and leaves the
other worker idle while it finishes. So the files of :data:`FIRST`, the longest measured,
go out first, longest first (the longest-processing-time rule), and the many short files fill
in behind them; the order inside a file is unchanged, and a serial run only changes order.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

#: Files run before all others, in this order (paths relative to the repository root): the
#: longest, by their seconds in a fresh-clone ``make test`` at 2d1f4b6 (JUnit times: setup,
#: call and teardown), longest first.
FIRST = (
    "tests/test_wheel.py",  # 128 s: a wheel, a fresh venv, tiny trainings from outside
    "tests/agents/test_cli.py",  # 71 s
    "tests/agents/test_faults.py",  # 69 s: kill -9, a full disk, two writers
    "tests/agents/test_demo.py",  # 52 s: two quick demos
    "tests/agents/test_train.py",  # 51 s
    "tests/envs/test_markets_simulator.py",  # 45 s
    "tests/agents/test_markets_cli.py",  # 31 s
    "tests/agents/test_seed_stats.py",  # 27 s: Ray
    "tests/agents/test_report.py",  # 25 s
    "tests/agents/test_evaluate.py",  # 24 s
    "tests/envs/test_ledger_properties.py",  # 21 s: hypothesis
    "tests/envs/test_venue_cross.py",  # 19 s
)


def pytest_collection_modifyitems(session: pytest.Session, items: list[pytest.Item]) -> None:
    """Move the tests of :data:`FIRST` to the front, keeping every other relative order."""
    rank = {name: k for k, name in enumerate(FIRST)}

    def key(item: pytest.Item) -> int:
        return rank.get(item.nodeid.split("::", 1)[0], len(FIRST))

    items.sort(key=key)  # stable: the order within a file and among the rest is kept


@pytest.fixture(autouse=True, scope="session")
def _sb3_logs_in_the_session_tmp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Point SB3's default log folder at the session's temporary directory.

    A model learning without a logger of its own (the tests that run SB3 as a user would)
    makes an ``SB3-<time>`` directory under the system's temp dir at every ``learn()``; the
    suite made hundreds a day. Subprocesses the tests start inherit the setting.
    """
    old = os.environ.get("SB3_LOGDIR")
    os.environ["SB3_LOGDIR"] = str(tmp_path_factory.mktemp("sb3_logs"))
    yield
    if old is None:
        os.environ.pop("SB3_LOGDIR", None)
    else:
        os.environ["SB3_LOGDIR"] = old

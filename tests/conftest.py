"""Suite-wide test order: the installed-wheel file first, so that ``make test`` ends sooner.

``make test`` runs ``pytest -n 2 --dist loadfile --no-loadscope-reorder``: each file runs whole
on one of CI's two workers, handed out in collection order. ``tests/test_wheel.py`` is by far
the longest file (about three minutes: a wheel build, a fresh venv, a cold numba compile in it,
tiny trainings) and is collected last, so it used to start near the end and leave the other
worker idle for minutes. Collected first, it runs on one worker from the start while the other
takes the rest; that worker also compiles the checkout's kernels alone, into the shared cache,
instead of both workers compiling the same kernels at once (the wheel's venv has a cache of its
own). The order inside a file is unchanged, and a serial run only runs the wheel file first.
"""

from __future__ import annotations

import pytest

#: Files run before all others, in this order (paths relative to the repository root).
FIRST = ("tests/test_wheel.py",)


def pytest_collection_modifyitems(session: pytest.Session, items: list[pytest.Item]) -> None:
    """Move the tests of :data:`FIRST` to the front, keeping every other relative order."""
    rank = {name: k for k, name in enumerate(FIRST)}

    def key(item: pytest.Item) -> int:
        return rank.get(item.nodeid.split("::", 1)[0], len(FIRST))

    items.sort(key=key)  # stable: the order within a file and among the rest is kept

"""Shared helpers of the multi-market and collateral tests (issue 17's scenario schema)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from fundgym.envs.market.factor import MarketsPath, draw_markets
from fundgym.envs.resources import SCENARIO_DIR
from fundgym.envs.scenarios import Scenario, scenario_from_dict
from fundgym.envs.schema import SchemaError, load_yaml


def library_dict(name: str) -> dict[str, Any]:
    """A library scenario's file as parsed YAML, to edit before validating."""
    return load_yaml((SCENARIO_DIR / f"{name}.yaml").read_text())


def draw(sc: Scenario, seed: int = 0, n_envs: int = 1) -> MarketsPath:
    """Every market's (and collateral asset's) drawn path, from ``seed``."""
    return draw_markets(sc, np.random.default_rng(seed), n_envs)


def assert_field_error(data: dict[str, Any], field: str, fragment: str) -> None:
    """Validating ``data`` fails naming the file, exactly ``field``, and saying ``fragment``."""
    with pytest.raises(SchemaError) as info:
        scenario_from_dict(data, "multi.yaml")
    assert info.value.source == "multi.yaml"
    assert info.value.path == field, str(info.value)
    assert fragment in str(info.value)

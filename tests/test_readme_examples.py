"""The README's environment examples run as written."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"<!-- readme-example -->\n```python\n(.*?)```", README.read_text(), re.S)


def test_readme_has_both_rollout_examples():
    assert len(BLOCKS) == 2


@pytest.mark.parametrize("code", BLOCKS, ids=["random_policy", "static_parameters"])
def test_readme_example_runs(code, capsys):
    exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "bps of OI" in out

"""The README's examples, by name: each fenced block after a ``<!-- readme-example: NAME -->``."""

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"

_MARKED = re.compile(r"<!-- readme-example: (\w+) -->\n```(\w+)\n(.*?)```", re.S)

#: ``(name, language, code)`` for every marked block, in the README's order.
BLOCKS = _MARKED.findall(README.read_text())

#: ``name -> code``.
EXAMPLES = {name: code for name, _, code in BLOCKS}

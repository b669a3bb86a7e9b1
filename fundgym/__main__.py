"""``python -m fundgym``: the ``fundgym`` command without the console script."""

from fundgym.agents.cli import main

raise SystemExit(main())

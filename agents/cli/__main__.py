"""``python -m fundgym.agents.cli``: the ``fundgym`` command without the console script."""

import sys

from fundgym.agents.cli import main

sys.exit(main())

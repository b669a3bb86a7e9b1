"""fundgym's tooling around the simulator.

The command line and the demo today; training, baselines, evaluation and export as they land.
"""

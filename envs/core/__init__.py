"""The margin engine: compiled kernels over the explicit state, and the formulas they apply.

``formulas`` holds every formula once (numpy, for tables and the public ``fundgym.envs.mechanics``);
``kernels`` applies the same formulas, compiled with numba, to :class:`fundgym.envs.state.SimState`;
``step`` is the margin engine's entry point (:func:`fundgym.envs.core.step.core_step`) and documents
the waterfall; ``events`` is what a tick reports; ``params`` validates the risk parameters;
``impact`` prices liquidation flow against book depth; ``trading`` executes trader orders,
deposits and funding; ``rng`` and ``random_nb`` give every exchange its own random streams;
``venue_events`` turns a scenario's venue events (outages, halts, settlement, leverage caps,
reduce-only) into per-tick arrays and holds the thin-market defences' rules (settlement, the
attacker's withdrawals, the mark cap).
"""

"""Pure, vectorised exchange mechanics over ``(n_envs, n_accounts)`` arrays.

``formulas`` holds every formula once; ``margin``, ``step`` and ``trading`` apply them to the
structure-of-arrays ``state``; ``params`` validates the risk parameters; ``impact`` prices
liquidation flow against book depth.
"""

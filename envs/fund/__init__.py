"""The insurance fund's money: its portfolio of buckets (and, later, a backstop vault).

One representation of each balance: :class:`fundgym.envs.fund.portfolio.FundPortfolio` *is* the
fund, held in the simulation state (:attr:`fundgym.envs.state.SimState.fund`); the margin engine
reads only what it may draw this tick
(:meth:`~fundgym.envs.fund.portfolio.FundPortfolio.liquid_usd`) and its flows are booked back once,
through :func:`fundgym.envs.fund.portfolio.settle`.
"""

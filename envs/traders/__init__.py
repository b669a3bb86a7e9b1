"""The modelled trader population: who opens, tops up, cuts and closes positions, and when.

:mod:`fundgym.envs.traders.population` holds the behaviour that feeds the margin engine new risk
each tick: arrivals with heavy-tailed sizes and retail leverage, exits, reactions near liquidation
and ordinary trading volume, all demand-elastic to the risk parameters.
"""

from fundgym.envs.traders.population import PopulationEvents, PopulationParams, TraderPopulation

__all__ = ["PopulationEvents", "PopulationParams", "TraderPopulation"]

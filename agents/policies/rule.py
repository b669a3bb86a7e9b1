"""The rule policy: the hand-written dynamic controller risk teams run today."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fundgym.agents.policies.base import FloatArray
from fundgym.envs.controls import DEFAULTS, PARAMS
from fundgym.envs.exchange_env import OBS_NAMES

_OBS = {name: i for i, name in enumerate(OBS_NAMES)}


@dataclass(frozen=True)
class RuleParams:
    """Settings of :class:`RulePolicy` (the kind a risk team writes into a runbook).

    Attributes:
        z: Standard deviations of price move the maintenance margin must cover.
        horizon_hours: Time to close a position out in stress (the margin period of risk).
        apc_buffer_frac: Anti-procyclicality buffer on top of the volatility margin in calm
            markets, released in stress (EMIR RTS 153/2013 art. 28(1)(a): 25%).
        apc_floor_frac: Margin never falls below this share of the highest margin of the
            episode so far (a look-back floor, so a calm hour cannot undo a stressed day).
        stress_ratio: Short over long volatility above which the market counts as stressed.
        fee_base: Liquidation fee at the target fund coverage.
        coverage_target_frac: Target fund value / open interest.
        yield_share_calm: Share of the fund in the yield bucket in calm markets.
        calm_vol: Annualised short volatility below which the market counts as calm.
    """

    z: float = 3.0
    horizon_hours: float = 4.0
    apc_buffer_frac: float = 0.25
    apc_floor_frac: float = 0.75
    stress_ratio: float = 1.5
    fee_base: float = 0.01
    coverage_target_frac: float = 0.02
    yield_share_calm: float = 0.3
    calm_vol: float = 0.8


class RulePolicy:
    """A hand-written dynamic controller of the kind exchange risk teams run.

    * **Margin**: MMR covers ``z`` standard deviations of the price move over
      ``horizon_hours`` at the larger of the 1-hour and 1-day realised volatilities (the
      observation), plus a 25% anti-procyclicality buffer in calm markets that is released in
      stress, and never below 75% of the highest MMR it asked for this episode (a look-back
      floor); clearing houses (EMIR art. 28, CFTC) do this so margins do not collapse after a
      calm spell and then jump in a crash.
    * **Fees**: the liquidation fee and the fund's share of trading fees rise as fund
      coverage (fund / open interest) falls below target: the fund refills fastest when it is
      lowest.
    * **Allocation**: part of the fund earns yield in calm markets; all of it moves to stable
      assets when volatility rises (yield withdrawals are limited under stress).

    Args:
        controlled: The environment's controlled parameters, in action order.
        params: The rule's settings.
    """

    NOTE = (
        "rule: MMR = 3 sigma of a 4-hour move (+25% buffer in calm, 75% look-back floor), fees "
        "up as fund coverage falls, fund to stable assets when volatility rises"
    )

    def __init__(self, controlled: tuple[str, ...], params: RuleParams | None = None) -> None:
        self.name = "rule"
        self.controlled = controlled
        self.p = params or RuleParams()
        self._peak_mmr = np.zeros(0)

    def reset(self, n_envs: int) -> None:
        """Forget the look-back floor."""
        self._peak_mmr = np.zeros(n_envs)

    def targets(self, obs: FloatArray) -> dict[str, FloatArray]:
        """The rule's targets in natural units (allocation as logit positions).

        Each target is saturated into its lever's action range
        (:meth:`fundgym.envs.levers.Lever.clip`):
        the rule computes freely, and the environment can only hold values in that range.
        """
        p = self.p
        n = obs.shape[0]
        if self._peak_mmr.shape != (n,):
            self.reset(n)
        new = obs[:, _OBS["episode_progress"]] <= 0.0
        self._peak_mmr[new] = 0.0
        vol_short = obs[:, _OBS["vol_short"]]
        vol_long = obs[:, _OBS["vol_long"]]
        vol = np.maximum(vol_short, vol_long)
        stressed = vol_short > p.stress_ratio * np.maximum(vol_long, 1e-9)
        mmr = p.z * vol * np.sqrt(p.horizon_hours / (365.0 * 24.0))
        mmr = np.where(stressed, mmr, mmr * (1.0 + p.apc_buffer_frac))
        mmr = np.maximum(mmr, p.apc_floor_frac * self._peak_mmr)
        # Clipped before it enters the look-back floor: the floor tracks what was asked for.
        mmr = PARAMS["mmr"].clip(mmr)
        self._peak_mmr = np.maximum(self._peak_mmr, mmr)
        coverage = obs[:, _OBS["fund_coverage"]] / 10.0
        short = np.clip(1.0 - coverage / p.coverage_target_frac, 0.0, 1.0)
        calm = (vol_short < p.calm_vol) & ~stressed
        # softmax(3 x logits): stable at +1 and yield at x gives yield share
        # 1 / (1 + exp(3 (1 - x))); solve for the calm share, all others at -1.
        share = p.yield_share_calm
        yield_logit = 1.0 - np.log((1.0 - share) / share) / 3.0
        raw = {
            "liquidation_fee_rate": p.fee_base * (1.0 + 2.0 * short),
            "liquidation_fee_fund_share": np.ones(n),
            "mmr": mmr,
            "imr_multiple": np.full(n, DEFAULTS["imr_multiple"]),
            "trading_fee_fund_share": 0.1 + 0.4 * short,
            "alloc_stable": np.ones(n),
            "alloc_yield": np.where(calm, yield_logit, -1.0),
            "alloc_volatile": -np.ones(n),
            "alloc_hedge": -np.ones(n),
        }
        return {name: PARAMS[name].clip(value) for name, value in raw.items()}

    def act(self, obs: FloatArray) -> FloatArray:
        """Target positions of the controlled parameters."""
        t = self.targets(np.asarray(obs, dtype=np.float64))
        cols = [PARAMS[n].to_position(t[n]) for n in self.controlled]
        return np.stack(cols, axis=1)

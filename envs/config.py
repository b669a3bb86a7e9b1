"""The environment's configuration: keyword arguments or a YAML file, validated once.

:class:`EnvConfig` is the one schema of everything that defines ``fundgym/InsuranceFund-v0``;
:func:`make_config` builds it from a file and/or keyword overrides through
:func:`fundgym.envs.schema.build`, which names the field, the value and what is allowed on error.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from fundgym.envs.controls import BUCKETS, PARAMS, buckets_problem
from fundgym.envs.core.params import AdlPolicy, LiquidationMode, check_waterfall
from fundgym.envs.fund.portfolio import MAX_PUT_CRASH_RATE_PER_YEAR, world_put_crash_rate_per_year
from fundgym.envs.levers import LEVERS
from fundgym.envs.market.sampler import (
    DEFAULT_TRAINING_HORIZON_MINUTES,
    MAX_TRAINING_HORIZON_MINUTES,
    SamplerSettings,
)
from fundgym.envs.rewards import RewardWeights
from fundgym.envs.scenarios import Scenario
from fundgym.envs.schema import FieldError, SchemaError, build, load_yaml, spec


def _fixed(name: str) -> Any:
    """A :class:`FixedParams` field: ``None`` or a value inside the lever's action range.

    The environment holds every lever as a position in its action range
    (:mod:`fundgym.envs.controls`),
    so a value outside that range could only be clipped to its edge: it is an error instead.
    """
    lever = PARAMS[name]
    return spec(
        None,
        ge=lever.low,
        le=lever.high,
        doc=f"{lever.doc}; {lever.unit}",
        note="the lever's action range: the environment holds it as a position there",
    )


def _hard(name: str, doc: str) -> Any:
    """A field holding lever ``name`` (not an action lever): its default and hard bounds."""
    lever = LEVERS[name]
    k = lever.bounds.spec_kwargs()
    return spec(
        lever.default,
        ge=k.get("ge"),
        gt=k.get("gt"),
        le=k.get("le"),
        lt=k.get("lt"),
        doc=f"{lever.doc}; {lever.unit} {doc}",
        note="the lever's hard bounds",
    )


@dataclass(frozen=True)
class FixedParams:
    """Natural-unit values where parameters start (``None``: the lever's default).

    A parameter that is not controlled stays at its value; a controlled one starts there. Each
    value must lie in its lever's action range (:data:`fundgym.envs.levers.LEVERS`), never clipped.
    """

    liquidation_fee_rate: float | None = _fixed("liquidation_fee_rate")
    liquidation_fee_fund_share: float | None = _fixed("liquidation_fee_fund_share")
    mmr: float | None = _fixed("mmr")
    imr_multiple: float | None = _fixed("imr_multiple")
    trading_fee_fund_share: float | None = _fixed("trading_fee_fund_share")


@dataclass(frozen=True)
class EnvConfig:
    """Everything that defines the environment (keyword arguments or a YAML file)."""

    scenario: str = spec("training", doc="library name, YAML path, or 'training' (sampler)")
    sampler: SamplerSettings = dataclasses.field(default_factory=SamplerSettings)
    n_accounts: int = spec(1024, ge=1, le=10_000_000, doc="account slots per exchange")
    decision_minutes: float = spec(10.0, gt=0.0, le=10_080.0, doc="minutes between actions")
    horizon_minutes: float | None = spec(
        None,
        gt=0.0,
        le=525_600.0,
        doc="episode cap (None: the scenario's; training: 1 day); a scenario is at most a year",
    )
    # Levers the action sets, in action order (names from fundgym.envs.levers.CONTROLLABLE).
    controlled: tuple[str, ...] = tuple(PARAMS)
    fixed: FixedParams = dataclasses.field(default_factory=FixedParams)
    max_step: float = spec(0.2, gt=0.0, le=2.0, doc="largest move per decision, action units")
    margin_notice_minutes: float = spec(30.0, ge=0.0, le=1e6, doc="delay of margin increases")
    fund_to_oi_frac: float = spec(0.02, ge=0.0, le=10.0, doc="initial fund / open interest")
    vault_to_oi_frac: float = spec(
        0.0,
        ge=0.0,
        le=10.0,
        doc="backstop vault capital / open interest (0: none; venue liquidation modes only)",
    )
    vault_adl_loss_frac: float | None = spec(
        None,
        ge=0.0,
        le=1.0,
        doc="the vault's loss limit / its capital, its inventory deleveraged beyond it (None: "
        "the liquidation mode's own, hyperliquid 2%)",
    )
    # A venue's top-ups of an exhausted fund (Deribit's 500 BTC after 12 Mar 2020, Binance's
    # $30M after 10 May 2020); fundgym.envs.fund.portfolio.inject_if_exhausted says when.
    fund_injection_frac: float = spec(
        0.0, ge=0.0, le=10.0, doc="one top-up of an exhausted fund / initial OI (0: none)"
    )
    fund_injection_max: int = spec(0, ge=0, le=1000, doc="top-ups at most per episode")
    insolvency_frac: float = spec(0.05, gt=0.0, le=10.0, doc="uncovered loss / OI that ends it")
    fallback: Literal["adl", "socialize"] = "adl"
    # Which opposite positions ADL closes and at what price (fundgym.envs.core.adl documents
    # each rule and its source): bitmex, hyperliquid, drift, water_filling, risk_pro_rata.
    adl_policy: AdlPolicy = "bitmex"
    # Whose liquidation engine runs (fundgym.envs.core.liquidation, docs/liquidation.md):
    # partial (25% a tick), binance, dydx_v4, hyperliquid, bitmex.
    liquidation_mode: LiquidationMode = "partial"
    # The loss waterfall's stages in order (None: margin, book, vault, fund, adl, socialize,
    # exchange, without adl when fallback is "socialize"); fundgym.envs.core.params
    # WATERFALL_STAGES gives the rules.
    waterfall: tuple[str, ...] | None = None
    # Notional brackets for the maintenance requirement ("none": flat MMR). With a table the
    # controlled ``mmr`` scales it (``mmr`` = the first bracket's rate reproduces the venue's).
    margin_tiers: Literal["none", "binance_btcusdt_2021"] = "none"
    taker_fee_rate: float = _hard("taker_fee_rate", "(not controlled)")
    liquidator_capacity_mult: float = _hard("liquidator_capacity_mult", "(not controlled)")
    unrealised_pnl_haircut_frac: float = _hard("unrealised_pnl_haircut_frac", "(not controlled)")
    oi_cap_frac: float = _hard("oi_cap_frac", "(not controlled)")
    mark_cap_mult: float = _hard("mark_cap_mult", "(not controlled)")
    rebalance_threshold: float = spec(0.02, ge=0.0, le=2.0, doc="L1 weight change to rebalance")
    # The allocation's own clock (issue 21: "decide allocation on a slower clock"): the fund
    # moves toward the action's allocation only at decisions on this clock, a whole multiple of
    # decision_minutes (None: every decision). The other levers keep the decision clock.
    allocation_minutes: float | None = spec(
        None, gt=0.0, le=10_080.0, doc="minutes between allocation moves (None: every decision)"
    )
    # A turnover budget on the allocation (issue 21: "a target with a turnover budget"): each
    # allocation move shifts at most this share of the fund (half the L1 distance between the
    # weights), toward the action's allocation along a straight line; later moves continue
    # (None: the whole way at once).
    allocation_turnover_frac: float | None = spec(
        None, gt=0.0, le=1.0, doc="largest share of the fund moved per allocation move (None: all)"
    )
    # The buckets the fund may hold (issue 21): the others weigh exactly 0 whatever the
    # action, and their logits may not be controlled. Leaving a logit uncontrolled does not
    # exclude its bucket: at its start it keeps a share of the softmax, which grows as the
    # controlled logits fall (fundgym.envs.controls).
    allocation_buckets: tuple[str, ...] = BUCKETS
    # What a put costs the fund (issue 21, "price puts with the fund's actual execution
    # costs"): the option market prices the crash rate of the world the fund lives in.
    # None: the world's own, put_crash_rate_per_year() below.
    put_crash_rate_per_year: float | None = spec(
        None,
        ge=0.0,
        le=MAX_PUT_CRASH_RATE_PER_YEAR,
        doc="crashes a year a put's quote prices (None: the sampler's crash_prob per episode "
        "for training draws, 2 a year [estimate] for named scenarios)",
    )
    population_minutes: float = spec(5.0, gt=0.0, le=1440.0, doc="clock of the trader flows")
    reward: RewardWeights = dataclasses.field(default_factory=RewardWeights)

    @property
    def training_horizon_minutes(self) -> float:
        """A training draw's length: ``horizon_minutes``, else one day (the sampler's default)."""
        return self.horizon_minutes or DEFAULT_TRAINING_HORIZON_MINUTES

    def __post_init__(self) -> None:
        bad = [n for n in self.controlled if n not in PARAMS]
        if bad:
            what = (
                f"{bad[0]!r} has hard bounds only, no action range"
                if bad[0] in LEVERS
                else f"unknown parameter {bad[0]!r}"
            )
            raise FieldError(
                "controlled", list(self.controlled), f"{what}; allowed: {list(PARAMS)}"
            )
        if not self.controlled or len(set(self.controlled)) != len(self.controlled):
            raise FieldError(
                "controlled", list(self.controlled), "distinct parameters, at least one"
            )
        held = self.allocation_buckets
        problem = buckets_problem(held)
        if problem is not None:
            raise FieldError("allocation_buckets", list(held), problem)
        dropped = [
            f"alloc_{b}" for b in BUCKETS if b not in held and f"alloc_{b}" in self.controlled
        ]
        if dropped:
            raise FieldError(
                "allocation_buckets",
                list(held),
                f"every bucket whose logit is controlled ({dropped[0]!r} is in controlled); "
                f"allowed: a subset of {list(BUCKETS)}",
            )
        if 0.0 < self.mark_cap_mult < 1.0:
            raise FieldError(
                "mark_cap_mult", self.mark_cap_mult, "0 (no cap) or >= 1 (a cap on the mark)"
            )
        if self.waterfall is not None:
            try:
                check_waterfall(tuple(self.waterfall), self.fallback, self.liquidation_mode)
            except ValueError as err:
                raise FieldError("waterfall", list(self.waterfall), str(err)) from None
        if self.vault_to_oi_frac > 0.0 and "vault" not in (self.waterfall or ("vault",)):
            raise FieldError(
                "vault_to_oi_frac",
                self.vault_to_oi_frac,
                "0 when the waterfall has no 'vault' stage",
            )
        if self.vault_to_oi_frac > 0.0 and self.liquidation_mode == "partial":
            raise FieldError(
                "vault_to_oi_frac",
                self.vault_to_oi_frac,
                "0 with liquidation_mode 'partial' (it hands no account to a vault); a vault "
                "needs liquidation_mode binance, dydx_v4, hyperliquid or bitmex",
            )
        if self.allocation_minutes is not None:
            ratio = self.allocation_minutes / self.decision_minutes
            if ratio < 1.0 - 1e-9 or abs(ratio - round(ratio)) > 1e-9:
                raise FieldError(
                    "allocation_minutes",
                    self.allocation_minutes,
                    f"a whole multiple of decision_minutes ({self.decision_minutes:g}), or "
                    "None (every decision)",
                )
        cap = MAX_TRAINING_HORIZON_MINUTES
        if self.scenario == "training" and (self.horizon_minutes or 0.0) > cap:
            # Checked here so the error comes before any work, not at the first reset.
            raise FieldError(
                "horizon_minutes",
                self.horizon_minutes,
                f"at most {cap:g} with scenario 'training' (the sampler draws up to 90 days)",
            )


def put_crash_rate_per_year(config: EnvConfig) -> float:
    """Crashes a year the fund's option market prices: the world's own unless configured.

    :func:`~fundgym.envs.fund.portfolio.world_put_crash_rate_per_year`: training draws'
    ``sampler.crash_prob`` per episode (``horizon_minutes``, one day by default), a named
    scenario's real market's rate (an estimate).
    """
    if config.put_crash_rate_per_year is not None:
        return config.put_crash_rate_per_year
    draws = config.scenario == "training"
    return world_put_crash_rate_per_year(
        config.sampler.crash_prob if draws else None, config.training_horizon_minutes
    )


def make_config(config: str | Path | EnvConfig | None = None, **overrides: Any) -> EnvConfig:
    """Build an :class:`EnvConfig` from a YAML file and/or keyword arguments (validated)."""
    data: dict[str, Any] = {}
    source = "<kwargs>"
    if isinstance(config, EnvConfig):
        data = dataclasses.asdict(config)
    elif config is not None:
        path = Path(config)
        if not path.is_file():
            raise FileNotFoundError(f"environment config {path} does not exist")
        loaded = load_yaml(path.read_text()) or {}
        source = str(path)
        if not isinstance(loaded, dict):
            raise SchemaError(source, "<top>", loaded, "a mapping of environment settings")
        data = dict(loaded.get("env", loaded))
    for key, value in overrides.items():
        if isinstance(value, Scenario):
            raise ValueError("pass scenario by name or path, not as a Scenario object")
        is_instance = dataclasses.is_dataclass(value) and not isinstance(value, type)
        data[key] = dataclasses.asdict(value) if is_instance else value
    for key in ("controlled", "allocation_buckets"):
        if isinstance(data.get(key), tuple):
            data[key] = list(data[key])
    return build(EnvConfig, data, source)

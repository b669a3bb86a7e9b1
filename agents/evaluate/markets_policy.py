"""A static policy spec as the multi-market simulator's risk parameters and fund size.

``fundgym markets --policy`` and the calibration's multi-market lines run a venue preset (or
any ``static:`` spec of ``fundgym evaluate``) on
:class:`~fundgym.envs.markets_simulator.MarketsSimulator`: its levers, ADL rule, margin tiers
and fund size. What the simulator does not build across markets (the venue engines other than
``binance``'s, a backstop vault, fund top-ups) is refused with the spec, what is missing and
what to add.
"""

from __future__ import annotations

from typing import cast

from fundgym.agents.policies.base import SpecError
from fundgym.agents.policies.registry import PolicySpec, parse_spec
from fundgym.envs.core.params import AdlPolicy, LiquidationMode, MarginTiers, RiskParams

#: The liquidation engines the multi-market simulator runs (``engine_risk``).
MARKET_MODES: tuple[str, ...] = ("partial", "binance")


def market_risk(text: str | None) -> tuple[RiskParams, float | None, str]:
    """``(risk, fund_to_oi_frac, note)`` of a static spec; ``None``: the levers' defaults.

    ``fund_to_oi_frac`` is the spec's fund (a venue preset's, or one it names), ``None`` to
    keep the caller's. Outside liquidators with capacity are not built across markets, so
    ``liquidator_capacity_mult`` is 0: the fee's non-fund share is paid as rewards and nobody
    absorbs flow off the book.

    Raises:
        SpecError: Not a static spec, an unknown preset or value (as ``fundgym evaluate``
            says), or one naming what is not built across markets.
    """
    if text is None:
        return RiskParams(liquidator_capacity_mult=0.0), None, "the levers' defaults"
    spec: PolicySpec = parse_spec(text)
    if spec.kind != "static":
        raise SpecError(
            f"policy {text!r}: a static:... set is needed (a venue preset or name=value "
            "levers); trained policies and schedules act through the one-market environment"
        )
    mode = spec.liquidation_mode or "partial"
    if mode not in MARKET_MODES:
        raise SpecError(
            f"policy {text!r}: liquidation_mode {mode!r} is not built across markets (only "
            f"{', '.join(MARKET_MODES)}); add ',liquidation_mode=partial' to run its levers, "
            "ADL rule and fund under the partial engine"
        )
    if spec.vault_to_oi_frac:
        raise SpecError(
            f"policy {text!r}: a backstop vault ({spec.vault_to_oi_frac:g} of OI) is not built "
            "across markets; add ',vault_to_oi_frac=0'"
        )
    if spec.fund_injection_frac:
        raise SpecError(f"policy {text!r}: fund top-ups are not built across markets")
    v = spec.values
    risk = RiskParams(
        mmr=v["mmr"],
        imr=min(v["mmr"] * v["imr_multiple"], 1.0),
        liquidation_fee_rate=v["liquidation_fee_rate"],
        liquidation_fee_fund_share=v["liquidation_fee_fund_share"],
        trading_fee_fund_share=v["trading_fee_fund_share"],
        adl_policy=cast(AdlPolicy, spec.adl_policy or "bitmex"),
        liquidation_mode=cast(LiquidationMode, mode),
        tiers=None if spec.margin_tiers == "none" else MarginTiers.binance_btcusdt_2021(),
        liquidator_capacity_mult=0.0,
    )
    return risk, spec.fund_to_oi_frac, spec.note or text

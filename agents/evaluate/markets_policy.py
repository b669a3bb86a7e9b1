"""A static policy spec as the multi-market simulator's risk parameters and fund size.

``fundgym markets --policy`` and the calibration's multi-market lines run a venue preset (or
any ``static:`` spec of ``fundgym evaluate``) on
:class:`~fundgym.envs.markets_simulator.MarketsSimulator`: its levers, ADL rule, margin tiers
fund size, backstop vault and fund top-ups. What the simulator does not build across markets
(a vault under ``partial``) is refused with the spec, what is missing and what to add.
"""

from __future__ import annotations

from typing import NamedTuple, cast

from fundgym.agents.policies.base import SpecError
from fundgym.agents.policies.registry import PolicySpec, parse_spec
from fundgym.envs.core.params import AdlPolicy, LiquidationMode, MarginTiers, RiskParams


class MarketRisk(NamedTuple):
    """A static spec as the multi-market simulator takes it.

    Attributes:
        risk: The risk parameters.
        fund_to_oi_frac: The spec's fund (a venue preset's, or one it names); ``None`` to keep
            the caller's.
        vault_to_oi_frac: The spec's backstop vault (Hyperliquid's HLP: 0.022), 0 for none.
        note: What the spec is, for tables.
        vault_adl_loss_frac: The vault's loss limit the spec names; ``None``: the liquidation
            mode's own (:func:`~fundgym.envs.core.vault.vault_loss_frac`).
        fund_injection_frac: The venue's top-ups of an exhausted fund, a share of open
            interest (0: none), and ``fund_injection_max`` how many.
    """

    risk: RiskParams
    fund_to_oi_frac: float | None
    vault_to_oi_frac: float
    note: str
    vault_adl_loss_frac: float | None = None
    fund_injection_frac: float = 0.0
    fund_injection_max: int = 0


def market_risk(text: str | None) -> MarketRisk:
    """The :class:`MarketRisk` of a static spec; ``None``: the levers' defaults.

    Outside liquidators take the capacity their share of the fee buys them in each market
    (``liquidator_capacity_mult`` at its lever's default, 1, as in the one-market
    environment); every venue preset pays its whole liquidation fee into the fund, so they
    take nothing under a preset.

    Raises:
        SpecError: Not a static spec, an unknown preset or value (as ``fundgym evaluate``
            says), or one naming what is not built across markets (a vault under
            ``partial``).
    """
    if text is None:
        defaults = RiskParams()
        return MarketRisk(defaults, None, 0.0, "the levers' defaults")
    spec: PolicySpec = parse_spec(text)
    if spec.kind != "static":
        raise SpecError(
            f"policy {text!r}: a static:... set is needed (a venue preset or name=value "
            "levers); trained policies and schedules act through the one-market environment"
        )
    mode = spec.liquidation_mode or "partial"
    if spec.vault_to_oi_frac and mode == "partial":
        raise SpecError(
            f"policy {text!r}: a backstop vault ({spec.vault_to_oi_frac:g} of OI) takes accounts "
            "over in a venue liquidation mode (hyperliquid, bitmex, dydx_v4), not under "
            "'partial'; add ',vault_to_oi_frac=0'"
        )
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
    )
    vault = float(spec.vault_to_oi_frac or 0.0)
    return MarketRisk(
        risk,
        spec.fund_to_oi_frac,
        vault,
        spec.note or text,
        spec.vault_adl_loss_frac,
        float(spec.fund_injection_frac or 0.0),
        int(spec.fund_injection_max or 0),
    )

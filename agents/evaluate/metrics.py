"""Per-episode risk metrics of an insurance-fund policy, and their aggregation over episodes.

Evaluation runs a policy through crash scenarios for several episodes and records, for every
decision step, what the environment reported (:class:`EpisodeRecord`).
:func:`episode_metrics` turns one such record into one row of ``metrics.csv``;
:func:`summarize` and :func:`summarize_policies` turn rows into one line per (policy, scenario)
or per policy, with confidence intervals; :func:`dominates` applies the quality bar a tuned
policy must clear against the reference (default) parameters.

Every metric is measured **over the episode horizon**: from the episode's start to the end of
its last decision (``horizon_minutes``, reported in each row and summary, because an episode
that terminates early on insolvency covers less time than one that runs to its end, and a loss
figure without its horizon cannot be compared with another). Amounts (``_usd``) are in USD,
``_frac`` columns are plain ratios (not percent), and ``_pct_oi`` columns are percent of the
open interest at the episode's start, so crashes of different size compare.

The metrics follow what exchange risk vendors (Gauntlet, Chaos Labs) report and what users of
an exchange ask for:

* insolvency split from liquidations: ``shortfall_usd`` is the bad debt the fund paid,
  ``bad_debt_usd = socialized_loss_usd + unrecovered_usd`` the loss borne *beyond* the fund
  (by traders through socialisation, or by the exchange), ``adl_volume_usd`` the notional
  auto-deleveraged from profitable traders, while ``liquidation_volume_usd`` counts the
  ordinary liquidations that need not hurt anyone;
* value at risk of bad debt (``bad_debt_var95_usd``, ``bad_debt_var99_usd``) and its expected
  shortfall, empirical over a group's episodes (:func:`var_es`);
* the probability that the fund is exhausted, with a Wilson interval (:func:`wilson_interval`),
  which stays inside [0, 1] and is sensible at 0 or all exhausted, where the normal
  approximation collapses to a point;
* capital efficiency: the fund and the maintenance margin that sit idle to buy that safety
  (``mean_capital_locked_usd``), the open interest the venue kept, the fee revenue earned;
* the headline loss ``solvency_loss_usd = bad_debt_usd + adl_volume_usd`` ("socialised loss
  plus deleveraged notional"), which :func:`dominates` compares between policies.
* who else carried the liquidations: the backstop vault's PnL, drawdown, peak inventory and
  takeovers (HLP-like, ``vault_*``, all 0 where no vault runs), the notional outside
  liquidators absorbed, and what ADL cost its counterparties (``adl_haircut_usd``) and
  deleveraged beyond the shortfall (``adl_overshoot_usd``).

Means come with two-sided Student-t intervals (:func:`mean_ci`): evaluation runs few episodes
per scenario, where the normal interval is too narrow. SciPy is not a dependency, so the t and
normal quantiles are computed here (:func:`student_t_quantile`, :func:`normal_quantile`) and
tested against published tables.

Pure numpy and the standard library: no torch and no Stable-Baselines3, so metrics can be
recomputed from saved records anywhere.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = np.ndarray[Any, np.dtype[np.float64]]

#: One row of ``metrics.csv`` (:func:`episode_metrics`) or one summary line (:func:`summarize`).
Row = dict[str, float | int | str | bool]

#: A fund at or below this fraction of the initial open interest counts as exhausted: the
#: simulator pays the fund down to exactly zero, but a fund held partly in volatile assets is
#: marked to market and may end a few dust dollars above it.
EXHAUSTED_FRAC_OI = 1e-6

#: Amounts that must not be negative may be negative by up to this fraction of the initial
#: open interest (floating-point dust from the simulator's ledger); they are clipped to 0.
#: Anything more negative is a sign error in the caller and raises.
NEGATIVE_DUST_FRAC_OI = 1e-9

#: Positions are action units in [-1, 1]; this much overshoot is accepted as rounding.
POSITION_TOLERANCE = 1e-9

#: Open interest is floored at this many USD where it divides (``mean_fund_to_oi_frac``), so a
#: venue whose open interest was fully liquidated does not divide by zero.
MIN_OPEN_INTEREST_USD = 1.0

#: No market's loss, volume or balance over one episode comes near this many USD (ten thousand
#: times world GDP; float64 no longer holds cents beyond 1e14). A ``_usd`` metric beyond it
#: means the simulation blew up (a scenario whose prices overflowed), not that a policy lost it.
MAX_PLAUSIBLE_USD = 1e18

#: Per-step arrays of EpisodeRecord, in declaration order.
STEP_FIELDS = (
    "time_minutes",
    "fund_balance_usd",
    "open_interest_usd",
    "capital_locked_usd",
    "mark_price",
    "liquidation_volume_usd",
    "shortfall_usd",
    "adl_volume_usd",
    "socialized_loss_usd",
    "unrecovered_usd",
    "fee_revenue_usd",
    "adl_haircut_usd",
    "adl_overshoot_usd",
    "liquidator_absorbed_usd",
    "vault_pnl_usd",
    "vault_drawdown_frac",
    "vault_peak_inventory_usd",
    "vault_takeovers",
    "vault_takeover_usd",
    "vault_adl_usd",
    "index_price",
    "fund_external_pnl_usd",
    "reward",
    "cost",
)

# Per-step amounts that cannot be negative (levels and loss/volume/fee flows).
_NON_NEGATIVE_FIELDS = (
    "fund_balance_usd",
    "open_interest_usd",
    "capital_locked_usd",
    "liquidation_volume_usd",
    "shortfall_usd",
    "adl_volume_usd",
    "socialized_loss_usd",
    "unrecovered_usd",
    "fee_revenue_usd",
    "adl_overshoot_usd",
    "liquidator_absorbed_usd",
    "vault_peak_inventory_usd",
    "vault_takeovers",
    "vault_takeover_usd",
    "vault_adl_usd",
)

#: Per-step fractions that cannot be negative (up to ``FRAC_TOLERANCE``, clipped to 0).
_NON_NEGATIVE_FRAC_FIELDS = ("vault_drawdown_frac",)

#: A fraction that cannot be negative may be negative by this much (floating-point round-off).
FRAC_TOLERANCE = 1e-9

#: The columns every :func:`episode_metrics` row has, in order; ``mean_<p>`` for each
#: parameter ``p`` of the record follows them.
EPISODE_COLUMNS: tuple[str, ...] = (
    "policy",
    "scenario",
    "episode",
    "seed",
    "n_steps",
    "horizon_minutes",
    "terminated",
    "socialized_loss_usd",
    "unrecovered_usd",
    "bad_debt_usd",
    "adl_volume_usd",
    "shortfall_usd",
    "insolvency_decision_loss_usd",
    "socialized_loss_pct_oi",
    "adl_volume_pct_oi",
    "bad_debt_pct_oi",
    "fund_min_usd",
    "fund_max_drawdown_frac",
    "fund_exhausted",
    "fund_at_trough_usd",
    "allocation_pnl_at_trough_usd",
    "liquidation_volume_usd",
    "liquidation_volume_pct_oi",
    "fee_revenue_usd",
    "adl_haircut_usd",
    "adl_overshoot_usd",
    "liquidator_absorbed_usd",
    "vault_initial_usd",
    "vault_pnl_usd",
    "vault_pnl_frac",
    "vault_max_drawdown_frac",
    "vault_peak_inventory_usd",
    "vault_takeovers",
    "vault_takeover_usd",
    "vault_adl_usd",
    "mean_open_interest_usd",
    "mean_capital_locked_usd",
    "mean_fund_usd",
    "mean_fund_to_oi_frac",
    "open_interest_retained_frac",
    "param_movement",
    "total_reward",
    "total_cost",
)

#: The numeric per-episode metrics that :func:`summarize` averages, each with a 95% t-interval.
SUMMARY_METRICS: tuple[str, ...] = tuple(
    c
    for c in EPISODE_COLUMNS
    if c not in ("policy", "scenario", "episode", "seed", "n_steps", "terminated", "fund_exhausted")
)

#: Confidence level of every interval in a summary.
SUMMARY_LEVEL = 0.95

#: Quality bar of :func:`dominates`: rule "loss" needs at most this share of the reference's
#: solvency loss (and no more capital); rule "capital" needs at most this share of its capital
#: (and no more loss).
LOSS_RULE_MAX_RATIO = 0.5
CAPITAL_RULE_MAX_RATIO = 0.8


# --------------------------------------------------------------------------------------------
# The record of one episode
# --------------------------------------------------------------------------------------------


class MetricError(ValueError):
    """An episode that cannot be scored: a number not finite, or an amount beyond any market.

    The message names the policy, scenario, episode, seed and metric
    (:data:`MAX_PLAUSIBLE_USD` bounds the amounts).
    """


def _describe_bad(arr: FloatArray, bad: npt.NDArray[np.bool_]) -> str:
    """``"index i: value"`` of the first entry flagged in ``bad`` (for error messages)."""
    idx = np.flatnonzero(bad.ravel())[0]
    where = np.unravel_index(idx, arr.shape)
    at = where[0] if len(where) == 1 else tuple(int(w) for w in where)
    return f"index {at}: {float(arr.ravel()[idx])!r}"


def _require_finite(arr: FloatArray, rule: str) -> None:
    """Raise ``ValueError("<rule>, got a non-finite value at index i: value")`` unless finite."""
    finite = np.isfinite(arr)
    if not finite.all():
        raise ValueError(f"{rule}, got a non-finite value at {_describe_bad(arr, ~finite)}")


def _as_steps(name: str, value: object, n_steps: int | None) -> FloatArray:
    """``value`` as a fresh 1-D float64 array of finite numbers, ``n_steps`` long if given.

    A copy, so a record never aliases a buffer the caller (or the environment) reuses.
    """
    try:
        arr = np.array(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a 1-D array of numbers, got {value!r}") from exc
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array (one value per step), got shape {arr.shape}")
    if n_steps is not None and arr.shape[0] != n_steps:
        raise ValueError(
            f"{name} must have one value per step ({n_steps}, the length of time_minutes), "
            f"got length {arr.shape[0]}"
        )
    _require_finite(arr, f"{name} must be finite at every step")
    return arr


@dataclass
class EpisodeRecord:
    """What the environment reported at each decision step of one evaluation episode.

    Every per-step array is 1-D float64 with one entry per decision (step ``t`` is the t-th
    decision). ``*_usd`` flows (volumes, losses, fees) are what happened *during* the step;
    ``fund_balance_usd``, ``open_interest_usd``, ``capital_locked_usd`` and ``mark_price`` are
    levels at the *end* of the step. The starting levels are separate fields because drawdown
    and "retained" ratios are measured from the episode's start, before the first decision.

    ``__post_init__`` validates and copies every array into a fresh float64 array, so a record
    can be built from lists or from the environment's reused buffers. Amounts that cannot be
    negative may be negative by floating-point dust (``NEGATIVE_DUST_FRAC_OI`` of the initial
    open interest), which is clipped to zero; anything more is a caller's sign error.

    Attributes:
        policy: Name of the policy evaluated (grouping key of :func:`summarize`).
        scenario: Name of the crash scenario (grouping key of :func:`summarize`).
        episode: Index of the episode within its (policy, scenario) evaluation.
        seed: Seed the episode was reset with, to reproduce it.
        initial_open_interest_usd: Open interest at the episode start (> 0): the scale of the
            ``_pct_oi`` metrics.
        initial_fund_usd: Insurance-fund value at the episode start (>= 0): the first point
            of the fund path for drawdown and minimum.
        initial_vault_usd: The backstop vault's capital at the episode start (>= 0; 0 when
            no vault runs): the scale of ``vault_pnl_frac``.
        time_minutes: Minutes since the episode start at the end of each step; positive and
            strictly increasing.
        fund_balance_usd: Fund value at the end of each step (>= 0).
        open_interest_usd: Open interest at the end of each step (>= 0).
        capital_locked_usd: Fund value plus the backstop vault's equity plus maintenance
            margin locked, end of step (>= 0).
        mark_price: Mark price at the end of each step (> 0).
        liquidation_volume_usd: Notional liquidated during the step (>= 0).
        shortfall_usd: Bad debt the fund paid during the step (>= 0).
        adl_volume_usd: Notional auto-deleveraged during the step (>= 0).
        socialized_loss_usd: Loss socialised across traders during the step (>= 0).
        unrecovered_usd: Loss nobody could bear, absorbed by the exchange (>= 0).
        fee_revenue_usd: Trading and liquidation fees charged during the step (>= 0).
        adl_haircut_usd: Mark-to-market profit the deleveraged counterparties gave up during
            the step (signed: negative where the ADL price paid them more than the mark).
        adl_overshoot_usd: Notional deleveraged during the step beyond what was needed to
            close the shortfall (>= 0).
        liquidator_absorbed_usd: Liquidation notional outside liquidators absorbed during the
            step (>= 0; the rest went to the book).
        vault_pnl_usd: The backstop vault's equity at the end of the step minus the capital
            it started the episode with (signed; 0 without a vault).
        vault_drawdown_frac: The vault's largest fall from its running peak equity so far in
            the episode, as a fraction of that peak, at the end of the step (>= 0; 1 when its
            equity reached 0, above 1 while it was below 0; 0 without a vault).
        vault_peak_inventory_usd: The largest notional the vault has held at any tick of
            the episode so far, at the oracle (>= 0; a running peak: the vault unwinds between
            decisions, so the step-end inventory would miss it).
        vault_takeovers: Accounts the vault took over during the step (>= 0).
        vault_takeover_usd: Notional of the positions it took over during the step (>= 0).
        vault_adl_usd: Notional of its own inventory deleveraged during the step, beyond its
            loss limit (>= 0; part of ``adl_volume_usd``).
        index_price: The index (the underlying's price) at the end of each step (> 0): where
            a crash's trough is.
        fund_external_pnl_usd: What the fund's allocation earned during the step against
            holding stable assets: yield, option marks and payoffs, the listed asset's moves,
            less every cost of moving the fund (signed; 0 for a fund in stable assets).
        reward: The environment's reward for the step.
        cost: The environment's cost (``info["cost"]``) for the step.
        params: Parameter name -> its value at each step in natural units (may be empty).
        positions: ``(n_steps, k)`` parameter positions in action units [-1, 1] (``k`` may be
            0), the basis of ``param_movement``.
        terminated: Whether the episode ended on insolvency rather than running to its end.
    """

    policy: str
    scenario: str
    episode: int
    seed: int
    initial_open_interest_usd: float
    initial_fund_usd: float
    initial_vault_usd: float
    time_minutes: FloatArray
    fund_balance_usd: FloatArray
    open_interest_usd: FloatArray
    capital_locked_usd: FloatArray
    mark_price: FloatArray
    liquidation_volume_usd: FloatArray
    shortfall_usd: FloatArray
    adl_volume_usd: FloatArray
    socialized_loss_usd: FloatArray
    unrecovered_usd: FloatArray
    fee_revenue_usd: FloatArray
    adl_haircut_usd: FloatArray
    adl_overshoot_usd: FloatArray
    liquidator_absorbed_usd: FloatArray
    vault_pnl_usd: FloatArray
    vault_drawdown_frac: FloatArray
    vault_peak_inventory_usd: FloatArray
    vault_takeovers: FloatArray
    vault_takeover_usd: FloatArray
    vault_adl_usd: FloatArray
    index_price: FloatArray
    fund_external_pnl_usd: FloatArray
    reward: FloatArray
    cost: FloatArray
    params: dict[str, FloatArray] = field(default_factory=dict)
    positions: FloatArray = field(default_factory=lambda: np.zeros((0, 0)))
    terminated: bool = False

    def __post_init__(self) -> None:
        """Validate every field and normalise the arrays (see the class docstring)."""
        for name in ("policy", "scenario"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"{name} must be a non-empty string, got {value!r}")
        for name in ("episode", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                raise ValueError(f"{name} must be an integer, got {value!r}")
            setattr(self, name, int(value))
        if not isinstance(self.terminated, bool | np.bool_):
            raise ValueError(f"terminated must be a bool, got {self.terminated!r}")
        self.terminated = bool(self.terminated)

        oi0 = self._scalar("initial_open_interest_usd")
        if not oi0 > 0.0:
            raise ValueError(
                f"initial_open_interest_usd must be > 0 (it scales every _pct_oi metric), "
                f"got {oi0!r}"
            )
        for name in ("initial_fund_usd", "initial_vault_usd"):
            start = self._scalar(name)
            if start < 0.0:
                raise ValueError(f"{name} must be >= 0, got {start!r}")

        time = _as_steps("time_minutes", self.time_minutes, None)
        n_steps = time.shape[0]
        if n_steps < 1:
            raise ValueError("time_minutes must have at least one step (n_steps >= 1), got 0")
        if time[0] <= 0.0:
            raise ValueError(
                "time_minutes must be > 0 (minutes since the episode start at the end of each "
                f"step), got time_minutes[0] = {time[0]!r}"
            )
        not_increasing = np.flatnonzero(np.diff(time) <= 0.0)
        if not_increasing.size:
            i = int(not_increasing[0]) + 1
            raise ValueError(
                "time_minutes must be strictly increasing, got time_minutes"
                f"[{i - 1}] = {time[i - 1]!r} then time_minutes[{i}] = {time[i]!r}"
            )
        self.time_minutes = time
        for name in STEP_FIELDS[1:]:
            setattr(self, name, _as_steps(name, getattr(self, name), n_steps))

        dust = NEGATIVE_DUST_FRAC_OI * oi0
        for name in _NON_NEGATIVE_FIELDS:
            arr = getattr(self, name)
            negative = arr < -dust
            if negative.any():
                raise ValueError(
                    f"{name} must be >= 0 at every step, got {_describe_bad(arr, negative)}"
                )
            np.maximum(arr, 0.0, out=arr)
        for name in _NON_NEGATIVE_FRAC_FIELDS:
            arr = getattr(self, name)
            negative = arr < -FRAC_TOLERANCE
            if negative.any():
                raise ValueError(
                    f"{name} must be >= 0 at every step, got {_describe_bad(arr, negative)}"
                )
            np.maximum(arr, 0.0, out=arr)
        for name in ("mark_price", "index_price"):
            arr = getattr(self, name)
            if not (arr > 0.0).all():
                raise ValueError(
                    f"{name} must be > 0 at every step, got {_describe_bad(arr, ~(arr > 0.0))}"
                )

        if not isinstance(self.params, Mapping):
            raise ValueError(
                f"params must be a dict of parameter name -> per-step values, got "
                f"{type(self.params).__name__}"
            )
        params: dict[str, FloatArray] = {}
        for key, values in self.params.items():
            if not isinstance(key, str) or not key:
                raise ValueError(f"params keys must be non-empty strings, got {key!r}")
            if f"mean_{key}" in EPISODE_COLUMNS:
                raise ValueError(
                    f"params key {key!r} would write column mean_{key}, which is a standard "
                    "metric column; rename the parameter"
                )
            params[key] = _as_steps(f"params[{key!r}]", values, n_steps)
        self.params = params

        try:
            positions = np.array(self.positions, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"positions must be an (n_steps, k) array of numbers, got {self.positions!r}"
            ) from exc
        if positions.shape in ((0,), (0, 0)):
            # No controlled parameters (the default): k = 0.
            positions = np.zeros((n_steps, 0))
        if positions.ndim != 2 or positions.shape[0] != n_steps:
            raise ValueError(
                f"positions must have shape (n_steps, k) = ({n_steps}, k), got shape "
                f"{positions.shape}"
            )
        _require_finite(positions, "positions must be finite")
        outside = np.abs(positions) > 1.0 + POSITION_TOLERANCE
        if outside.any():
            raise ValueError(
                "positions must lie in [-1, 1] (action units, not natural units), got "
                f"{_describe_bad(positions, outside)}"
            )
        self.positions = positions

    def _scalar(self, name: str) -> float:
        """The finite float in field ``name``, stored back as a Python float."""
        value = getattr(self, name)
        if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
            raise ValueError(f"{name} must be a number, got {value!r}")
        out = float(value)
        if not math.isfinite(out):
            raise ValueError(f"{name} must be finite, got {out!r}")
        setattr(self, name, out)
        return out

    @property
    def n_steps(self) -> int:
        """Number of decision steps in the episode."""
        return int(self.time_minutes.shape[0])


# --------------------------------------------------------------------------------------------
# One episode -> one row
# --------------------------------------------------------------------------------------------


def _total(arr: FloatArray) -> float:
    """Correctly rounded sum (``math.fsum``): totals do not depend on summation order.

    A sum beyond float64's range is returned as the infinity it rounds to (``math.fsum``
    raises instead), for :func:`check_metrics` to refuse with the metric's name.
    """
    try:
        return math.fsum(arr.tolist())
    except OverflowError:
        with np.errstate(over="ignore"):
            return float(np.sum(arr))


def _mean(arr: FloatArray) -> float:
    """Mean from the correctly rounded sum."""
    return _total(arr) / len(arr)


def max_drawdown_frac(initial_usd: float, path_usd: FloatArray) -> float:
    """Largest peak-to-trough decline of a value path, as a fraction of the peak.

    The path starts at ``initial_usd`` (the value before the first step), so a fund that only
    falls from its starting level still shows the fall. At each point the decline is
    ``(running peak - value) / running peak``, or 0 while the running peak is 0 (nothing to
    lose yet). For non-negative values the result lies in [0, 1]; 1 means the fund was emptied
    from a peak.

    Args:
        initial_usd: Value before the first step.
        path_usd: 1-D values at the end of each step.

    Returns:
        The maximum decline fraction over the path.
    """
    path = np.concatenate(([float(initial_usd)], np.asarray(path_usd, dtype=np.float64)))
    peak = np.maximum.accumulate(path)
    positive = peak > 0.0
    decline = np.zeros_like(path)
    decline[positive] = (peak[positive] - path[positive]) / peak[positive]
    return float(decline.max())


def fund_exhausted(initial_usd: float, path_usd: FloatArray, initial_oi_usd: float) -> bool:
    """Whether the fund hit zero: fell to ``EXHAUSTED_FRAC_OI x initial OI`` after holding more.

    The path starts at ``initial_usd``. A fund that starts above the threshold is exhausted
    when its lowest point reaches it. A fund that starts at 0 (a venue with no insurance fund,
    whose backstop is a vault or ADL) is not exhausted by starting empty: only if it grows
    above the threshold (fee income) and then falls back to it; otherwise every episode of
    such a venue would count as exhausted, and ``p_fund_exhausted`` would read 100% for a
    fund that never existed.

    Args:
        initial_usd: The fund before the first step.
        path_usd: 1-D fund values at the end of each step.
        initial_oi_usd: Open interest at the episode start (scales the threshold).

    Returns:
        True if some point at or below the threshold follows a point above it.
    """
    threshold = EXHAUSTED_FRAC_OI * initial_oi_usd
    path = np.concatenate(([float(initial_usd)], np.asarray(path_usd, dtype=np.float64)))
    held = np.maximum.accumulate(path) > threshold
    return bool(np.any(held & (path <= threshold)))


def param_movement(positions: FloatArray) -> float:
    """Total parameter movement: the sum over steps of the L1 norm of position changes.

    Row ``t`` is compared with row ``t - 1``; the first row has no previous decision in the
    record and counts 0 movement (where the policy starts from is the environment's default,
    not a move the policy chose). Units are action units, as the environment's churn penalty.

    Args:
        positions: ``(n_steps, k)`` positions in action units; ``k`` may be 0.

    Returns:
        The movement, 0 for a single step or no parameters.
    """
    pos = np.asarray(positions, dtype=np.float64)
    if pos.shape[0] < 2 or pos.shape[1] == 0:
        return 0.0
    return math.fsum(np.abs(np.diff(pos, axis=0)).sum(axis=1).tolist())


def episode_metrics(rec: EpisodeRecord) -> Row:
    """One row of ``metrics.csv``: the risk metrics of one episode over its horizon.

    The columns are :data:`EPISODE_COLUMNS` in that order, then ``mean_<p>`` for each
    parameter ``p`` in ``rec.params`` (in the record's order). Flows are summed with
    ``math.fsum`` and means are over decision steps (each step weighs the same, as each is
    one decision of the policy). Values are plain Python ``str``/``int``/``float``/``bool``,
    ready for ``csv`` or JSON.

    Column meanings (USD unless named otherwise; ``pct_oi`` = 100 x sum / initial OI):

    * ``horizon_minutes``: ``time_minutes`` at the end of the last step: what "over the
      episode" means for this row;
    * ``socialized_loss_usd``, ``unrecovered_usd``, ``adl_volume_usd``, ``shortfall_usd``,
      ``liquidation_volume_usd``, ``fee_revenue_usd``: sums of the flows;
    * ``bad_debt_usd`` = socialised + unrecovered: the loss borne beyond the fund, the loss
      behind value at risk;
    * ``insolvency_decision_loss_usd``: the solvency loss (socialised + unrecovered + ADL
      notional) of the last decision of an episode that ended on insolvency, the one that
      crossed the line; 0 for an episode that ran to its end. On the training sampler's
      stress draws 86-91% of every policy's loss is there (a pump's next leg deleverages
      several times the open interest in ten minutes), and which decision crosses decides
      millions on one draw (docs/benchmarks.md), so the rest, the loss before the exchange
      failed, is what a policy's levers move;
    * ``fund_min_usd``: the lowest fund level including the starting level;
      ``fund_max_drawdown_frac``: see :func:`max_drawdown_frac` (0 for a fund that never rose
      above 0: a venue without one); ``fund_exhausted``: see :func:`fund_exhausted`;
    * ``fund_at_trough_usd``: the fund at the end of the step whose index is lowest (the
      first such step), the crash's trough; ``allocation_pnl_at_trough_usd``: what the fund's
      allocation had earned by then against holding stable assets (the sum of the steps'
      ``fund_external_pnl_usd`` up to the trough; 0 for a fund in stable assets): issue 21's
      bar, on the episode's own path (a second run with the allocation held stable parts
      ways with this one);
    * ``adl_haircut_usd``, ``adl_overshoot_usd``: sums of the profit ADL took from its
      counterparties (signed: a close at a price better than the mark gives some back) and of
      the notional it deleveraged beyond the shortfall;
      ``liquidator_absorbed_usd``: the sum of what outside liquidators absorbed;
    * the backstop vault (all 0 without one): ``vault_pnl_usd``, its PnL at the episode's
      end (equity minus starting capital), and ``vault_pnl_frac``, that PnL over its
      starting capital ``vault_initial_usd`` (0 when it started with none: there is no
      vault to earn on); ``vault_max_drawdown_frac``, the largest of its
      per-step ``vault_drawdown_frac`` (the environment's running fall from peak equity);
      ``vault_peak_inventory_usd``, the largest notional it held at any tick;
      ``vault_takeovers`` and ``vault_takeover_usd``, sums of its takeovers and their
      notional; ``vault_adl_usd``, the sum of its own inventory deleveraged beyond its loss
      limit (part of ``adl_volume_usd``);
    * ``mean_open_interest_usd``, ``mean_capital_locked_usd``, ``mean_fund_usd``: means of
      the end-of-step levels; ``mean_fund_to_oi_frac``: mean of fund / OI over the steps
      that ended with open interest of at least ``MIN_OPEN_INTEREST_USD`` (a market settled
      and closed, as ``luna_2022`` does, has none: its fund over a floored OI read 10,000x);
      0 when no step had any; ``open_interest_retained_frac``: last OI / initial OI;
    * ``param_movement``: see :func:`param_movement` (the first step counts 0);
    * ``total_reward``, ``total_cost``: sums of the environment's reward and cost.

    Args:
        rec: The validated record of one episode.

    Returns:
        The row, keyed by column name.

    Raises:
        MetricError: A metric is not finite or an amount is implausible
            (:func:`check_metrics`).
    """
    oi0 = rec.initial_open_interest_usd
    socialized = _total(rec.socialized_loss_usd)
    unrecovered = _total(rec.unrecovered_usd)
    bad_debt = socialized + unrecovered
    adl = _total(rec.adl_volume_usd)
    liquidations = _total(rec.liquidation_volume_usd)
    fund_min = min(rec.initial_fund_usd, float(rec.fund_balance_usd.min()))
    vault_pnl = float(rec.vault_pnl_usd[-1])
    open_ = rec.open_interest_usd >= MIN_OPEN_INTEREST_USD
    fund_to_oi = rec.fund_balance_usd[open_] / rec.open_interest_usd[open_]
    trough = int(np.argmin(rec.index_price))  # the first step at the lowest index
    row: Row = {
        "policy": rec.policy,
        "scenario": rec.scenario,
        "episode": rec.episode,
        "seed": rec.seed,
        "n_steps": rec.n_steps,
        "horizon_minutes": float(rec.time_minutes[-1]),
        "terminated": rec.terminated,
        "socialized_loss_usd": socialized,
        "unrecovered_usd": unrecovered,
        "bad_debt_usd": bad_debt,
        "adl_volume_usd": adl,
        "shortfall_usd": _total(rec.shortfall_usd),
        "insolvency_decision_loss_usd": (
            float(rec.socialized_loss_usd[-1] + rec.unrecovered_usd[-1] + rec.adl_volume_usd[-1])
            if rec.terminated
            else 0.0
        ),
        "socialized_loss_pct_oi": 100.0 * socialized / oi0,
        "adl_volume_pct_oi": 100.0 * adl / oi0,
        "bad_debt_pct_oi": 100.0 * bad_debt / oi0,
        "fund_min_usd": fund_min,
        "fund_max_drawdown_frac": max_drawdown_frac(rec.initial_fund_usd, rec.fund_balance_usd),
        "fund_exhausted": fund_exhausted(rec.initial_fund_usd, rec.fund_balance_usd, oi0),
        "fund_at_trough_usd": float(rec.fund_balance_usd[trough]),
        "allocation_pnl_at_trough_usd": _total(rec.fund_external_pnl_usd[: trough + 1]),
        "liquidation_volume_usd": liquidations,
        "liquidation_volume_pct_oi": 100.0 * liquidations / oi0,
        "fee_revenue_usd": _total(rec.fee_revenue_usd),
        "adl_haircut_usd": _total(rec.adl_haircut_usd),
        "adl_overshoot_usd": _total(rec.adl_overshoot_usd),
        "liquidator_absorbed_usd": _total(rec.liquidator_absorbed_usd),
        "vault_initial_usd": rec.initial_vault_usd,
        "vault_pnl_usd": vault_pnl,
        "vault_pnl_frac": vault_pnl / rec.initial_vault_usd if rec.initial_vault_usd > 0 else 0.0,
        "vault_max_drawdown_frac": float(rec.vault_drawdown_frac.max()),
        "vault_peak_inventory_usd": float(rec.vault_peak_inventory_usd.max()),
        "vault_takeovers": _total(rec.vault_takeovers),
        "vault_takeover_usd": _total(rec.vault_takeover_usd),
        "vault_adl_usd": _total(rec.vault_adl_usd),
        "mean_open_interest_usd": _mean(rec.open_interest_usd),
        "mean_capital_locked_usd": _mean(rec.capital_locked_usd),
        "mean_fund_usd": _mean(rec.fund_balance_usd),
        "mean_fund_to_oi_frac": _mean(fund_to_oi) if fund_to_oi.size else 0.0,
        "open_interest_retained_frac": float(rec.open_interest_usd[-1]) / oi0,
        "param_movement": param_movement(rec.positions),
        "total_reward": _total(rec.reward),
        "total_cost": _total(rec.cost),
    }
    for name, values in rec.params.items():
        row[f"mean_{name}"] = _mean(values)
    check_metrics(row)
    return row


def check_metrics(row: Mapping[str, object]) -> None:
    """Refuse a row with a number that is not finite or an amount no market reaches.

    Every record's per-step values are finite (:class:`EpisodeRecord` checks them), but their
    sums and ratios may still overflow, and a scenario whose prices blew up gives finite
    amounts of 1e89 USD. Such a row must stop the evaluation, not become a reported loss.

    Args:
        row: A row of :func:`episode_metrics` (its ``policy``, ``scenario``, ``episode`` and
            ``seed`` name the episode in the message).

    Raises:
        MetricError: Naming the episode, the first bad metric, its value and why.
    """
    for key, value in row.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if not math.isfinite(value):
            why = "is not finite"
        elif key.endswith("_usd") and abs(value) > MAX_PLAUSIBLE_USD:
            why = f"is beyond {MAX_PLAUSIBLE_USD:.0e} USD, more than any market holds"
        else:
            continue
        raise MetricError(
            f"policy {row.get('policy')!r} on scenario {row.get('scenario')!r}, episode "
            f"{row.get('episode')} (seed {row.get('seed')}): {key} = {value!r} {why}; the "
            "simulation blew up (a scenario whose prices or balances overflow), so the "
            "evaluation stops instead of reporting it"
        )


# --------------------------------------------------------------------------------------------
# Statistics: quantiles, intervals, value at risk
# --------------------------------------------------------------------------------------------


def _check_level(level: object, name: str = "level") -> float:
    """``level`` as a float strictly between 0 and 1, else a ValueError naming it."""
    if isinstance(level, bool) or not isinstance(level, int | float | np.integer | np.floating):
        raise ValueError(f"{name} must be a number strictly between 0 and 1, got {level!r}")
    out = float(level)
    if not 0.0 < out < 1.0:
        raise ValueError(f"{name} must lie strictly between 0 and 1, got {level!r}")
    return out


def _check_sample(values: npt.ArrayLike, name: str) -> FloatArray:
    """``values`` as a non-empty 1-D float64 array of finite numbers, else a ValueError."""
    try:
        arr = np.array(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a 1-D sequence of numbers, got {values!r}") from exc
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} must not be empty")
    _require_finite(arr, f"{name} must be finite")
    return arr


# Acklam's rational approximation of the normal quantile (relative error < 1.15e-9), refined
# below by one Halley step to full double precision.
_ACKLAM_A = (
    -3.969683028665376e01,
    2.209460984245205e02,
    -2.759285104469687e02,
    1.383577518672690e02,
    -3.066479806614716e01,
    2.506628277459239e00,
)
_ACKLAM_B = (
    -5.447609879822406e01,
    1.615858368580409e02,
    -1.556989798598866e02,
    6.680131188771972e01,
    -1.328068155288572e01,
)
_ACKLAM_C = (
    -7.784894002430293e-03,
    -3.223964580411365e-01,
    -2.400758277161838e00,
    -2.549732539343734e00,
    4.374664141464968e00,
    2.938163982698783e00,
)
_ACKLAM_D = (
    7.784695709041462e-03,
    3.224671290700398e-01,
    2.445134137142996e00,
    3.754408661907416e00,
)
_ACKLAM_P_LOW = 0.02425


def _acklam(p: float) -> float:
    """Acklam's approximation of the standard normal quantile, for 0 < p < 1."""
    a, b, c, d = _ACKLAM_A, _ACKLAM_B, _ACKLAM_C, _ACKLAM_D
    if p < _ACKLAM_P_LOW or p > 1.0 - _ACKLAM_P_LOW:
        q = math.sqrt(-2.0 * math.log(min(p, 1.0 - p)))
        x = (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) / (
            (((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1.0
        )
        return x if p < 0.5 else -x
    q = p - 0.5
    r = q * q
    return (
        (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5])
        * q
        / (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1.0)
    )


def _normal_cdf(z: float) -> float:
    """Standard normal CDF through ``math.erfc`` (accurate in the lower tail)."""
    return 0.5 * math.erfc(-z / math.sqrt(2.0))


def normal_quantile(p: float) -> float:
    """Quantile of the standard normal distribution: ``z`` with ``P(Z <= z) = p``.

    Acklam's rational approximation (relative error 1.15e-9) refined with one Halley step on
    ``Phi(x) - p`` where ``Phi`` is computed from ``math.erfc``, which brings the result to
    about double precision; the upper half is computed as ``-z(1 - p)`` so the tail keeps
    relative precision. Implemented here because SciPy is not a
    dependency.

    Args:
        p: Probability, strictly between 0 and 1.

    Returns:
        The quantile.

    Raises:
        ValueError: If ``p`` is not strictly between 0 and 1.
    """
    p = _check_level(p, "p")
    # Work in the lower half, where Phi(x) = erfc(-x / sqrt 2) / 2 keeps relative precision
    # (1 - p is exact for p >= 1/2), and reflect: z(p) = -z(1 - p).
    lower = min(p, 1.0 - p)
    x = _acklam(lower)
    # Halley: e = Phi(x) - p, u = e / phi(x); x <- x - u / (1 + x u / 2).
    e = _normal_cdf(x) - lower
    u = e * math.sqrt(2.0 * math.pi) * math.exp(0.5 * x * x)
    x -= u / (1.0 + 0.5 * x * u)
    return x if p <= 0.5 else -x


_BETACF_EPS = 1e-16
_BETACF_TINY = 1e-300
_BETACF_MAX_ITER = 100_000


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz, Numerical Recipes).

    Converges fast for ``x < (a + 1) / (a + b + 2)``; the caller uses the symmetry
    ``I_x(a, b) = 1 - I_{1-x}(b, a)`` otherwise.
    """
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = 1.0
    d = 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > _BETACF_TINY else _BETACF_TINY)
    h = d
    for m in range(1, _BETACF_MAX_ITER + 1):
        m2 = 2 * m
        for aa in (
            m * (b - m) * x / ((qam + m2) * (a + m2)),
            -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2)),
        ):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > _BETACF_TINY else _BETACF_TINY)
            c = 1.0 + aa / c
            c = c if abs(c) > _BETACF_TINY else _BETACF_TINY
            delta = d * c
            h *= delta
        if abs(delta - 1.0) < _BETACF_EPS:
            return h
    raise ArithmeticError(f"incomplete beta continued fraction did not converge (a={a}, b={b})")


_STIRLING_MIN = 100.0


def _log_gamma_ratio(a: float, b: float) -> float:
    """``lgamma(a + b) - lgamma(a)`` for ``a >= b > 0``, accurate when ``a`` is large.

    For large ``a`` the two lgamma values are huge and nearly equal (at ``a = 5e11`` they
    are ~1e13 apart from 0 and differ by ~10), so their difference loses every digit. Above
    ``_STIRLING_MIN`` the difference of Stirling's series is taken term by term instead
    (truncation error below 1e-14 there), with ``log1p`` for ``log(1 + b / a)``.
    """
    if a < _STIRLING_MIN:
        return math.lgamma(a + b) - math.lgamma(a)
    c = a + b
    return (
        b * math.log(a)
        + ((c - 0.5) * math.log1p(b / a) - b)
        + (1.0 / c - 1.0 / a) / 12.0
        - (1.0 / c**3 - 1.0 / a**3) / 360.0
        + (1.0 / c**5 - 1.0 / a**5) / 1260.0
    )


def _betainc(a: float, b: float, x: float, y: float) -> float:
    """Regularised incomplete beta ``I_x(a, b)``, with ``y = 1 - x`` passed exactly.

    Passing ``y`` separately keeps full relative precision when ``x`` is close to 1 (the
    t distribution's centre, where ``y = t^2 / (df + t^2)`` is computed without cancellation).
    """
    if x <= 0.0:
        return 0.0
    if y <= 0.0:
        return 1.0
    log_x = math.log(x) if x < 0.5 else math.log1p(-y)
    log_y = math.log(y) if y < 0.5 else math.log1p(-x)
    small, big = min(a, b), max(a, b)
    log_front = _log_gamma_ratio(big, small) - math.lgamma(small) + a * log_x + b * log_y
    front = math.exp(log_front)
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, y) / b


def _t_upper_tail(t: float, df: float) -> float:
    """``P(T > t)`` for ``t >= 0``: ``I_{df / (df + t^2)}(df / 2, 1 / 2) / 2``."""
    v = t * t / df
    return 0.5 * _betainc(0.5 * df, 0.5, 1.0 / (1.0 + v), v / (1.0 + v))


#: Above this many degrees of freedom the t distribution is computed from its expansion
#: around the normal: the incomplete beta's continued fraction is ill-conditioned there (its
#: relative error grows like df x 1e-16), while the expansion's error falls like df^-5.
DF_ASYMPTOTIC = 1e4

#: Quantiles beyond this magnitude are reported as infinite (the tail arithmetic would
#: underflow); only absurd levels (p within ~1e-150 of 0 or 1 at small df) reach it.
_T_MAX = 1e150


def _t_quantile_expansion(z: float, df: float) -> float:
    """Student-t quantile from the normal quantile ``z`` (Abramowitz & Stegun 26.7.5).

    The Cornish-Fisher expansion ``t = z + g1 / df + g2 / df^2 + g3 / df^3 + g4 / df^4``;
    at ``df >= DF_ASYMPTOTIC`` the omitted terms are below 1e-15 for ``|z| <= 9``.
    """
    z2 = z * z
    g1 = (z2 + 1.0) * z / 4.0
    g2 = ((5.0 * z2 + 16.0) * z2 + 3.0) * z / 96.0
    g3 = (((3.0 * z2 + 19.0) * z2 + 17.0) * z2 - 15.0) * z / 384.0
    g4 = ((((79.0 * z2 + 776.0) * z2 + 1482.0) * z2 - 1920.0) * z2 - 945.0) * z / 92160.0
    return z + (g1 + (g2 + (g3 + g4 / df) / df) / df) / df


def _check_df(df: object) -> float:
    """Degrees of freedom as a finite float > 0, else a ValueError naming ``df``."""
    if isinstance(df, bool) or not isinstance(df, int | float | np.integer | np.floating):
        raise ValueError(f"df must be a number > 0, got {df!r}")
    out = float(df)
    if not (math.isfinite(out) and out > 0.0):
        raise ValueError(f"df (degrees of freedom) must be finite and > 0, got {df!r}")
    return out


def student_t_cdf(t: float, df: float) -> float:
    """Cumulative distribution function of Student's t with ``df`` degrees of freedom.

    Up to ``DF_ASYMPTOTIC`` degrees of freedom through the regularised incomplete beta
    function (continued fraction), the textbook route that keeps relative precision in the
    tails (about 1e-12). Above it, by inverting the Cornish-Fisher expansion of the quantile
    (:func:`student_t_quantile` uses the same expansion there, so the two stay inverse to
    each other).

    Args:
        t: Any finite value.
        df: Degrees of freedom, finite and > 0 (need not be an integer).

    Returns:
        ``P(T <= t)``.

    Raises:
        ValueError: If ``t`` is not finite or ``df`` is not finite and > 0.
    """
    df = _check_df(df)
    if isinstance(t, bool) or not isinstance(t, int | float | np.integer | np.floating):
        raise ValueError(f"t must be a finite number, got {t!r}")
    t = float(t)
    if not math.isfinite(t):
        raise ValueError(f"t must be finite, got {t!r}")
    if df > DF_ASYMPTOTIC:
        # The expansion is increasing in z; beyond |z| = 40 the normal CDF is 0 or 1.
        lo, hi = -40.0, 40.0
        if t <= _t_quantile_expansion(lo, df):
            return 0.0
        if t >= _t_quantile_expansion(hi, df):
            return 1.0
        while True:
            mid = 0.5 * (lo + hi)
            if mid <= lo or mid >= hi:
                return _normal_cdf(mid)
            if _t_quantile_expansion(mid, df) < t:
                lo = mid
            else:
                hi = mid
    tail = _t_upper_tail(abs(t), df)
    return 1.0 - tail if t >= 0.0 else tail


def student_t_quantile(p: float, df: float) -> float:
    """Quantile of Student's t: ``t`` with ``P(T <= t) = p``.

    Up to ``DF_ASYMPTOTIC`` degrees of freedom: solves ``P(T > |t|) = min(p, 1 - p)`` by
    bracketing and bisection on the upper tail from the incomplete beta function (see
    :func:`student_t_cdf`), then applies the sign. The tail is decreasing in ``t``, so
    bisection cannot fail, and working with the tail rather than the CDF keeps relative
    precision for ``p`` close to 0 or 1. Bisection runs until the bracket is one ulp wide:
    full double precision at about 100 tail evaluations, nothing next to an evaluation
    episode. Above ``DF_ASYMPTOTIC``: the Cornish-Fisher expansion around
    :func:`normal_quantile` (Abramowitz & Stegun 26.7.5), accurate to double precision there.

    Args:
        p: Probability, strictly between 0 and 1.
        df: Degrees of freedom, finite and > 0 (need not be an integer).

    Returns:
        The quantile; ``±inf`` if its magnitude would exceed 1e150 (only ``p`` within about
        1e-150 of 0 or 1 at ``df`` near 1, or less extreme ``p`` at ``df < 1``).

    Raises:
        ValueError: If ``p`` is not strictly between 0 and 1 or ``df`` is not finite and > 0.
    """
    p = _check_level(p, "p")
    df = _check_df(df)
    if p == 0.5:
        return 0.0
    if df > DF_ASYMPTOTIC:
        return _t_quantile_expansion(normal_quantile(p), df)
    sign = 1.0 if p > 0.5 else -1.0
    target = 1.0 - p if p > 0.5 else p  # upper-tail probability of |quantile|; exact
    lo, hi = 0.0, 1.0
    while _t_upper_tail(hi, df) > target:
        if hi > _T_MAX:
            return sign * math.inf
        lo, hi = hi, 2.0 * hi
    while True:
        mid = 0.5 * (lo + hi)
        if mid <= lo or mid >= hi:
            return sign * mid
        if _t_upper_tail(mid, df) > target:
            lo = mid
        else:
            hi = mid


def mean_ci(values: npt.ArrayLike, level: float = 0.95) -> tuple[float, float, float]:
    """Sample mean and its two-sided Student-t confidence interval.

    ``mean ± t_{(1 + level) / 2, n - 1} x s / sqrt(n)`` with ``s`` the sample standard
    deviation (``ddof = 1``). Student's t rather than the normal because evaluation runs few
    episodes per scenario: with 5 episodes the 95% t-interval is 1.42 times wider than the
    normal one. The interval assumes independent episodes (distinct seeds).

    With one value there is no estimate of spread; the interval is then the point
    ``(mean, mean, mean)`` rather than an error, so a one-episode smoke evaluation still
    produces a summary. Read such an interval as "not estimated", not as certainty.

    Args:
        values: 1-D, non-empty, finite sample.
        level: Confidence level, strictly between 0 and 1.

    Returns:
        ``(mean, low, high)``.

    Raises:
        ValueError: If ``values`` is empty, not 1-D or not finite, or ``level`` is not in
            (0, 1).
    """
    level = _check_level(level)
    arr = _check_sample(values, "values")
    n = arr.shape[0]
    mean = _mean(arr)
    if n == 1:
        return mean, mean, mean
    s = float(np.std(arr, ddof=1))
    half = student_t_quantile(0.5 * (1.0 + level), n - 1) * s / math.sqrt(n)
    return mean, mean - half, mean + half


def wilson_interval(successes: int, n: int, level: float = 0.95) -> tuple[float, float, float]:
    """A proportion and its Wilson score confidence interval.

    Used for the probability that the fund is exhausted. The Wilson interval (Wilson, 1927)
    inverts the score test: with ``z`` the normal quantile at ``(1 + level) / 2`` and
    ``p = successes / n``,

    ``centre = (p + z^2 / (2n)) / (1 + z^2 / n)``,
    ``half = z sqrt(p (1 - p) / n + z^2 / (4 n^2)) / (1 + z^2 / n)``.

    Unlike the normal (Wald) interval it stays inside [0, 1] and does not collapse to a point
    when no (or every) episode exhausted the fund, which is the common case for a few
    episodes. At 0 successes the lower end is exactly 0 and at ``n`` the upper end exactly 1.

    Args:
        successes: Number of episodes with the event, ``0 <= successes <= n``.
        n: Number of episodes, >= 1.
        level: Confidence level, strictly between 0 and 1.

    Returns:
        ``(proportion, low, high)``.

    Raises:
        ValueError: If the counts are not integers in range or ``level`` is not in (0, 1).
    """
    level = _check_level(level)
    for name, value in (("successes", successes), ("n", n)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise ValueError(f"{name} must be an integer, got {value!r}")
    k, total = int(successes), int(n)
    if total < 1:
        raise ValueError(f"n must be >= 1, got {total}")
    if not 0 <= k <= total:
        raise ValueError(f"successes must lie in [0, n] = [0, {total}], got {k}")
    z = normal_quantile(0.5 * (1.0 + level))
    p = k / total
    z2n = z * z / total
    denom = 1.0 + z2n
    centre = (p + 0.5 * z2n) / denom
    half = z * math.sqrt(p * (1.0 - p) / total + z2n / (4.0 * total)) / denom
    low = 0.0 if k == 0 else max(0.0, centre - half)
    high = 1.0 if k == total else min(1.0, centre + half)
    return p, low, high


def var_es(losses: npt.ArrayLike, level: float) -> tuple[float, float]:
    """Empirical Value-at-Risk and Expected Shortfall of a loss sample.

    ``VaR`` is the lower empirical quantile, without interpolation: the smallest loss ``x`` in
    the sample such that the share of sample values ``<= x`` is at least ``level``. With the
    losses sorted ascending that is ``sorted[ceil(level x n) - 1]`` (``level x n`` is taken
    with a 1e-9 tolerance so 0.07 x 100 counts as 7, not 7.000000000000001). No interpolation
    because each value is a loss that happened in an episode; a VaR between two episodes'
    losses would be a loss nobody observed.

    ``ES`` is the mean of the sample's losses ``>= VaR`` (ties with VaR included), the
    average loss in the tail that VaR marks.

    With few episodes the tail is thin: for ``n < 100`` the 99% VaR is the sample maximum
    (``ceil(0.99 n) = n``) and ES99 equals it. Read those as "worst seen", not as a 1-in-100
    estimate.

    Args:
        losses: 1-D, non-empty, finite loss sample (positive = loss).
        level: Confidence level, strictly between 0 and 1 (e.g. 0.95, 0.99).

    Returns:
        ``(var, es)``; ``es >= var``.

    Raises:
        ValueError: If ``losses`` is empty, not 1-D or not finite, or ``level`` is not in
            (0, 1).
    """
    level = _check_level(level)
    ordered = np.sort(_check_sample(losses, "losses"))
    n = ordered.shape[0]
    index = min(max(math.ceil(level * n - 1e-9) - 1, 0), n - 1)
    var = float(ordered[index])
    tail = ordered[ordered >= var]
    # The tail's mean lies in [VaR, max] exactly; clamp away the last-bit rounding of the
    # division (three equal losses x sum to 3x, and 3x / 3 may round above x).
    es = min(max(_mean(tail), var), float(tail[-1]))
    return var, es


# --------------------------------------------------------------------------------------------
# Rows -> summaries
# --------------------------------------------------------------------------------------------


def episode_solvency_loss_usd(row: Mapping[str, object], i: int = 0) -> float:
    """Episode row ``i``'s user loss: bad debt (socialised + unrecovered) + deleveraged notional.

    The one home of the headline loss per episode; the summaries, the frontier and the
    statistics across seeds all read it from here.

    Raises:
        ValueError: The row lacks either column or holds a non-finite or non-numeric value.
    """
    return _number(row, "bad_debt_usd", i) + _number(row, "adl_volume_usd", i)


def _number(row: Mapping[str, object], key: str, i: int) -> float:
    """Row ``i``'s finite numeric ``key``, else a ValueError naming both."""
    if key not in row:
        raise ValueError(f"rows[{i}] has no {key!r} (rows must come from episode_metrics)")
    value = row[key]
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValueError(
            f"rows[{i}][{key!r}] must be a number, got {value!r} (convert rows read back from "
            "a CSV file to numbers first)"
        )
    out = float(value)
    if not math.isfinite(out):
        raise ValueError(f"rows[{i}][{key!r}] must be finite, got {out!r}")
    return out


def _text(row: Mapping[str, object], key: str, i: int) -> str:
    """Row ``i``'s non-empty string ``key``, else a ValueError naming both."""
    if key not in row:
        raise ValueError(f"rows[{i}] has no {key!r} (rows must come from episode_metrics)")
    value = row[key]
    if not isinstance(value, str) or not value:
        raise ValueError(f"rows[{i}][{key!r}] must be a non-empty string, got {value!r}")
    return value


def _flag(row: Mapping[str, object], key: str, i: int) -> bool:
    """Row ``i``'s boolean ``key``, else a ValueError naming both."""
    if key not in row:
        raise ValueError(f"rows[{i}] has no {key!r} (rows must come from episode_metrics)")
    value = row[key]
    if not isinstance(value, bool | np.bool_):
        raise ValueError(f"rows[{i}][{key!r}] must be a bool, got {value!r}")
    return bool(value)


def _summarize_group(
    policy: str, scenario: str, rows: Sequence[Mapping[str, object]], index: Sequence[int]
) -> Row:
    """One summary line for ``rows`` (whose positions in the caller's list are ``index``)."""
    out: Row = {"policy": policy, "scenario": scenario, "episodes": len(rows)}
    for metric in SUMMARY_METRICS:
        values = [_number(r, metric, i) for r, i in zip(rows, index, strict=True)]
        mean, low, high = mean_ci(values, SUMMARY_LEVEL)
        out[metric] = mean
        out[f"{metric}_ci_low"] = low
        out[f"{metric}_ci_high"] = high
    exhausted = sum(_flag(r, "fund_exhausted", i) for r, i in zip(rows, index, strict=True))
    p, low, high = wilson_interval(exhausted, len(rows), SUMMARY_LEVEL)
    out["p_fund_exhausted"] = p
    out["p_fund_exhausted_ci_low"] = low
    out["p_fund_exhausted_ci_high"] = high
    bad_debt = [_number(r, "bad_debt_usd", i) for r, i in zip(rows, index, strict=True)]
    var95, es95 = var_es(bad_debt, 0.95)
    var99, es99 = var_es(bad_debt, 0.99)
    out["bad_debt_var95_usd"] = var95
    out["bad_debt_es95_usd"] = es95
    out["bad_debt_var99_usd"] = var99
    out["bad_debt_es99_usd"] = es99
    solvency = [episode_solvency_loss_usd(r, i) for r, i in zip(rows, index, strict=True)]
    mean, low, high = mean_ci(solvency, SUMMARY_LEVEL)
    out["solvency_loss_usd"] = mean
    out["solvency_loss_usd_ci_low"] = low
    out["solvency_loss_usd_ci_high"] = high
    return out


def _group(rows: Sequence[Mapping[str, object]], by_scenario: bool) -> list[Row]:
    """Summaries of ``rows`` grouped by (policy, scenario) or by policy, first-seen order."""
    if isinstance(rows, Mapping | str) or not isinstance(rows, Sequence):
        raise ValueError(f"rows must be a list of episode_metrics rows, got {type(rows).__name__}")
    if len(rows) == 0:
        raise ValueError("rows must not be empty: there is nothing to summarize")
    groups: dict[tuple[str, str], tuple[list[Mapping[str, object]], list[int]]] = {}
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise ValueError(f"rows[{i}] must be a dict (an episode_metrics row), got {row!r}")
        policy = _text(row, "policy", i)
        scenario = _text(row, "scenario", i) if by_scenario else "ALL"
        members, index = groups.setdefault((policy, scenario), ([], []))
        members.append(row)
        index.append(i)
    return [
        _summarize_group(policy, scenario, members, index)
        for (policy, scenario), (members, index) in groups.items()
    ]


def summarize(rows: Sequence[Mapping[str, object]]) -> list[Row]:
    """One summary line per (policy, scenario), in the order each pair first appears.

    Each line has ``policy``, ``scenario``, ``episodes``; for every metric ``m`` of
    :data:`SUMMARY_METRICS` its mean ``m`` and 95% Student-t interval ``m_ci_low``,
    ``m_ci_high`` (:func:`mean_ci`); ``p_fund_exhausted`` with its Wilson interval
    (``p_fund_exhausted_ci_low``, ``p_fund_exhausted_ci_high``); the empirical value at risk
    and expected shortfall of ``bad_debt_usd`` over the group's episodes
    (``bad_debt_var95_usd``, ``bad_debt_es95_usd``, ``bad_debt_var99_usd``,
    ``bad_debt_es99_usd``, see :func:`var_es`); and ``solvency_loss_usd``, the mean over
    episodes of ``bad_debt_usd + adl_volume_usd`` (socialised and unrecovered loss plus
    deleveraged notional: what users lose), with ``solvency_loss_usd_ci_low`` and
    ``solvency_loss_usd_ci_high``.

    Per-parameter ``mean_<p>`` columns are not summarised: policies may control different
    parameters.

    Args:
        rows: Rows from :func:`episode_metrics` (numbers, not strings read from a CSV).

    Returns:
        The summary lines.

    Raises:
        ValueError: If ``rows`` is empty or a row lacks a metric or holds a non-number.
    """
    return _group(rows, by_scenario=True)


def summarize_policies(rows: Sequence[Mapping[str, object]]) -> list[Row]:
    """One summary line per policy across all its scenarios (``scenario = "ALL"``).

    The same columns as :func:`summarize`, over every episode of the policy pooled. The
    intervals then treat all episodes as one sample, so they describe the scenario mix that
    was evaluated: compare policies evaluated on the same scenarios and episode counts.

    Args:
        rows: Rows from :func:`episode_metrics`.

    Returns:
        The summary lines, in the order each policy first appears.

    Raises:
        ValueError: If ``rows`` is empty or a row lacks a metric or holds a non-number.
    """
    return _group(rows, by_scenario=False)


# --------------------------------------------------------------------------------------------
# The quality bar
# --------------------------------------------------------------------------------------------


def _ratio(candidate: float, reference: float) -> float:
    """``candidate / reference`` with a zero reference: 0 if both are 0, else infinity."""
    if reference > 0.0:
        return candidate / reference
    return 0.0 if candidate == 0.0 else math.inf


def _summary_amount(summary: Mapping[str, object], key: str, name: str) -> float:
    """A finite, non-negative amount from a summary, else a ValueError naming it."""
    if key not in summary:
        raise ValueError(f"{name} has no {key!r} (pass a line from summarize/summarize_policies)")
    value = summary[key]
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValueError(f"{name}[{key!r}] must be a number, got {value!r}")
    out = float(value)
    if not (math.isfinite(out) and out >= 0.0):
        raise ValueError(f"{name}[{key!r}] must be finite and >= 0, got {out!r}")
    return out


def dominates(
    candidate: Mapping[str, object], reference: Mapping[str, object]
) -> dict[str, bool | str | float | None]:
    """Whether a candidate policy clears the quality bar against a reference policy.

    The candidate dominates if either

    * rule ``"loss"``: its mean ``solvency_loss_usd`` is at most 50% of the reference's and
      its ``mean_capital_locked_usd`` is no higher (half the harm for no more capital), or
    * rule ``"capital"``: its ``solvency_loss_usd`` is no higher and its
      ``mean_capital_locked_usd`` is at least 20% lower (the same safety for less capital).

    Rule ``"loss"`` is checked first and reported when both hold. The comparisons are on the
    amounts (``c <= 0.5 r``), not on rounded ratios. When both losses are 0 the loss bar is met
    trivially (0 <= 0.5 x 0), so rule ``"loss"`` then reduces to "no more capital": a policy
    as safe and as cheap as the reference passes. The rules compare means; check the
    summaries' intervals before calling a narrow win real.

    Args:
        candidate: Summary line of the candidate (from :func:`summarize_policies`, usually
            scenario ``"ALL"``).
        reference: Summary line of the reference over the same scenarios.

    Returns:
        ``dominates`` (bool), ``rule`` (``"loss"``, ``"capital"`` or None), ``loss_ratio`` and
        ``capital_ratio`` (candidate / reference; with a zero reference, 0 when both are 0 and
        infinity when only the candidate is positive).

    Raises:
        ValueError: If a summary lacks ``solvency_loss_usd`` or ``mean_capital_locked_usd``,
            holds a negative or non-finite one, or the two cover different scenarios.
    """
    for name, summary in (("candidate", candidate), ("reference", reference)):
        if not isinstance(summary, Mapping):
            raise ValueError(f"{name} must be a summary dict, got {type(summary).__name__}")
    if (
        "scenario" in candidate
        and "scenario" in reference
        and candidate["scenario"] != reference["scenario"]
    ):
        raise ValueError(
            "candidate and reference must summarise the same scenarios, got scenario "
            f"{candidate['scenario']!r} vs {reference['scenario']!r}"
        )
    loss_c = _summary_amount(candidate, "solvency_loss_usd", "candidate")
    loss_r = _summary_amount(reference, "solvency_loss_usd", "reference")
    cap_c = _summary_amount(candidate, "mean_capital_locked_usd", "candidate")
    cap_r = _summary_amount(reference, "mean_capital_locked_usd", "reference")
    rule: str | None = None
    if loss_c <= LOSS_RULE_MAX_RATIO * loss_r and cap_c <= cap_r:
        rule = "loss"
    elif loss_c <= loss_r and cap_c <= CAPITAL_RULE_MAX_RATIO * cap_r:
        rule = "capital"
    return {
        "dominates": rule is not None,
        "rule": rule,
        "loss_ratio": _ratio(loss_c, loss_r),
        "capital_ratio": _ratio(cap_c, cap_r),
    }

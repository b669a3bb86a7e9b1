"""The renderer: frame contract, panels that follow the data, the text line, the font, the ring.

Pixel checks find a series by its palette colour (:class:`Ink`): each series, the bars, the
parameter fill and the insolvency marker have colours of their own. At the default 640x400 the
price panel's plot starts at row 24, below its legend line (rows 15-21), which also uses the
series' colours.
"""

import warnings

import numpy as np
import pytest

from fundgym.envs.levers import CONTROLLABLE, LEVERS
from fundgym.envs.render import (
    FONT_CHARS,
    PALETTE,
    Ink,
    RenderFrame,
    RenderHistory,
    draw_text,
    format_param,
    format_price,
    format_time,
    format_usd,
    glyph,
    render_ansi,
    render_rgb,
    text_mask,
    text_width,
)

DEFAULT_PARAMS = {name: LEVERS[name].default for name in CONTROLLABLE}
PRICE_PLOT_TOP = 24


def frame(i: int = 0, **kw: object) -> RenderFrame:
    fields: dict[str, object] = {
        "minute": 5.0 * i,
        "index_price": 100_000.0,
        "mark_price": 100_000.0,
        "oracle_price": 100_000.0,
        "fund_usd": 50e6,
        "open_interest_usd": 400e6,
        "liquidated_usd": 0.0,
        "params": DEFAULT_PARAMS,
        "insolvent": False,
        "scenario": "oct_10_2025",
    }
    fields.update(kw)
    return RenderFrame(**fields)  # type: ignore[arg-type]


def history(frames: list[RenderFrame], capacity: int = 1024) -> RenderHistory:
    h = RenderHistory(capacity)
    for f in frames:
        h.append(f)
    return h


def prices(values: np.ndarray, **kw: object) -> RenderHistory:
    """A history whose index, mark and oracle all follow ``values``."""
    return history(
        [
            frame(i, index_price=v, mark_price=v, oracle_price=v, **kw)
            for i, v in enumerate(values.tolist())
        ]
    )


def ink(img: np.ndarray, which: Ink) -> np.ndarray:
    """Where ``img`` has ``which``'s colour."""
    return np.asarray((img == PALETTE[which]).all(axis=-1))


def sample_history(n: int = 200) -> RenderHistory:
    rng = np.random.default_rng(7)
    price = 100_000.0 * np.exp(np.cumsum(rng.normal(0.0, 0.004, n)))
    liq = np.maximum(rng.normal(0.0, 2e6, n), 0.0)
    return history(
        [
            frame(
                i,
                index_price=price[i],
                mark_price=price[i] * 1.001,
                oracle_price=price[max(i - 2, 0)],
                fund_usd=50e6 - 1e5 * i,
                liquidated_usd=liq[i],
            )
            for i in range(n)
        ]
    )


# ---- frame contract -------------------------------------------------------------------------


def test_frame_contract_shape_dtype_content_and_determinism() -> None:
    h = sample_history()
    img = render_rgb(h)
    assert img.shape == (400, 640, 3)
    assert img.dtype == np.uint8
    # Background, panels, text and at least the six data colours.
    assert len(np.unique(img.reshape(-1, 3), axis=0)) >= 10
    assert np.array_equal(img, render_rgb(h))
    assert np.array_equal(img, render_rgb(history(h.frames)))


@pytest.mark.parametrize(("width", "height"), [(160, 120), (333, 217), (1280, 800)])
def test_other_sizes(width: int, height: int) -> None:
    img = render_rgb(sample_history(50), width, height)
    assert img.shape == (height, width, 3)
    assert ink(img, Ink.MARK).any()
    assert ink(img, Ink.LIQUIDATED).any()


def test_empty_history_reads_no_data() -> None:
    img = render_rgb(RenderHistory(), 320, 200)
    assert img.shape == (200, 320, 3)
    mask = text_mask("NO DATA")
    h, w = mask.shape
    y, x = (200 - h) // 2, (320 - w) // 2
    assert np.array_equal(ink(img, Ink.TEXT)[y : y + h, x : x + w], mask)
    assert not ink(img, Ink.MARK).any()


# ---- the panels follow the data -------------------------------------------------------------


def mark_slope(img: np.ndarray) -> float:
    """Correlation of column and row over the price plot's mark pixels (rows grow downwards)."""
    ys, xs = np.nonzero(ink(img, Ink.MARK)[PRICE_PLOT_TOP:])
    return float(np.corrcoef(xs, ys)[0, 1])


def test_price_panel_follows_the_direction_of_the_price() -> None:
    rising = render_rgb(prices(np.linspace(90_000.0, 110_000.0, 60)))
    falling = render_rgb(prices(np.linspace(110_000.0, 90_000.0, 60)))
    assert mark_slope(rising) < -0.9
    assert mark_slope(falling) > 0.9


def test_flat_price_draws_one_horizontal_line() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        img = render_rgb(prices(np.full(30, 123.45)))
    ys, xs = np.nonzero(ink(img, Ink.MARK)[PRICE_PLOT_TOP:])
    assert len(np.unique(ys)) == 1
    assert xs.max() - xs.min() > 300


@pytest.mark.parametrize(
    "values",
    [
        np.full(10, 0.0),
        np.array([1e-300, 3e-300, 2e-300]),
        np.array([1e300, -1e300, 1.7e308]),
        np.array([5.0, np.nan, np.inf, -np.inf, 6.0]),
        np.array([np.nan, np.nan]),
    ],
)
def test_extreme_and_missing_values_draw_without_warnings(values: np.ndarray) -> None:
    h = history(
        [
            frame(i, mark_price=v, fund_usd=v, liquidated_usd=v, open_interest_usd=v)
            for i, v in enumerate(values.tolist())
        ]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        img = render_rgb(h)
        render_ansi(h.frames[-1])
    assert img.shape == (400, 640, 3)
    if np.isfinite(values).any():
        assert ink(img, Ink.MARK)[PRICE_PLOT_TOP:].any()


def test_a_single_spike_among_more_decisions_than_columns_is_drawn() -> None:
    values = np.full(1500, 100.0)
    values[700] = 200.0
    img = render_rgb(prices(values, params={}))
    ys, _ = np.nonzero(ink(img, Ink.MARK)[PRICE_PLOT_TOP:])
    flat_row = np.bincount(ys).argmax()
    assert ys.min() < flat_row - 50


def bar_pixels(img: np.ndarray) -> np.ndarray:
    """Pixels of the liquidation bars: the bar colour, less the legend's text."""
    mask = ink(img, Ink.LIQUIDATED)
    legend = text_mask("LIQUIDATED PER DECISION")
    assert mask.sum() >= legend.sum()  # the legend is drawn in the bar colour
    ys, _ = np.nonzero(mask)
    legend_rows = ys.min(), ys.min() + legend.shape[0]
    mask[legend_rows[0] : legend_rows[1]] = False
    return mask


def test_liquidation_bars_only_where_something_was_liquidated() -> None:
    quiet = render_rgb(history([frame(i) for i in range(20)]))
    assert not bar_pixels(quiet).any()
    spike = render_rgb(
        history([frame(i, liquidated_usd=5e6 if i == 5 else 0.0) for i in range(20)])
    )
    _, xs = np.nonzero(bar_pixels(spike))
    # The plot is x=6..369, 364 wide (see the marker test) and the liquidation plot 88 rows
    # tall (panel 103 less border, padding and legend). Column c shows decision c * 20 // 364:
    # decision 5 owns c = 91..109, less its last column (the gap between bars).
    assert set(xs.tolist()) == set(range(6 + 91, 6 + 109))
    # The largest bar sets the scale: it fills the plot.
    assert np.bincount(xs).max() == 88


def test_fund_panel_follows_the_fund() -> None:
    down = render_rgb(history([frame(i, fund_usd=50e6 - 1e6 * i) for i in range(40)]))
    up = render_rgb(history([frame(i, fund_usd=10e6 + 1e6 * i) for i in range(40)]))
    for img, sign in ((down, 1.0), (up, -1.0)):
        mask = ink(img, Ink.FUND)
        ys, xs = np.nonzero(mask)
        below_legend = ys > ys.min() + 8
        assert sign * np.corrcoef(xs[below_legend], ys[below_legend])[0, 1] > 0.9


def test_parameter_bar_grows_with_the_parameter() -> None:
    mmr = LEVERS["mmr"]
    low = render_rgb(history([frame(params={"mmr": mmr.low})]))
    high = render_rgb(history([frame(params={"mmr": mmr.high})]))
    none = render_rgb(history([frame(params={})]))
    assert not ink(low, Ink.PARAM).any()  # the bottom of the action range: an empty bar
    assert ink(high, Ink.PARAM).sum() > 100
    assert not ink(none, Ink.PARAM).any()


def test_insolvent_marker_only_when_insolvent_and_where_it_happened() -> None:
    solvent = render_rgb(history([frame(i) for i in range(40)]))
    assert not ink(solvent, Ink.INSOLVENT).any()

    def marker_columns(at: int) -> np.ndarray:
        img = render_rgb(history([frame(i, insolvent=i >= at) for i in range(40)]))
        ys, xs = np.nonzero(ink(img, Ink.INSOLVENT))
        assert ys.min() < 12  # the title's INSOLVENT label
        return xs[ys >= PRICE_PLOT_TOP]

    # All three time panels share one plot geometry at 640x400: the panel is 432 wide from
    # x=3, its inside from x=6 is 426 wide, less the label column ("101,000.00", 59 px, the
    # widest label) and a 3 px gap: the plot is x=6..369, 364 wide. Decision k's slot centre
    # is (k + 0.5) * 364 / 40 - 0.5: 95.05 for k=10, 277.05 for k=30.
    assert set(marker_columns(10).tolist()) == {6 + 95}
    assert set(marker_columns(30).tolist()) == {6 + 277}


# ---- the ring -------------------------------------------------------------------------------


def test_ring_keeps_the_newest_frames_oldest_first() -> None:
    h = RenderHistory(capacity=3)
    for i in range(5):
        h.append(frame(i))
    assert len(h) == 3
    assert h.capacity == 3
    assert [f.minute for f in h.frames] == [10.0, 15.0, 20.0]
    h.clear()
    assert len(h) == 0
    assert h.frames == []


@pytest.mark.parametrize("capacity", [0, -1, 2.5, True, "8"])
def test_bad_capacity(capacity: object) -> None:
    with pytest.raises(ValueError, match="capacity"):
        RenderHistory(capacity)  # type: ignore[arg-type]


def test_frame_copies_its_params() -> None:
    params = {"mmr": 0.03}
    f = frame(params=params)
    params["mmr"] = 0.5
    assert f.params == {"mmr": 0.03}


# ---- text -----------------------------------------------------------------------------------


def test_ansi_line() -> None:
    f = frame(
        18,  # minute 90
        mark_price=101_234.5,
        fund_usd=12.34e6,
        open_interest_usd=456e6,
        liquidated_usd=1.2e6,
    )
    line = render_ansi(f)
    assert "\n" not in line
    assert line.startswith("oct_10_2025 t=+1h30m mark=101,234.50 fund=$12.3M oi=$456M liq=$1.20M |")
    for part in ("fee=1.50%", "fee_fund=100%", "mmr=3.00%", "imr/mmr=1.67x", "tfee_fund=10%"):
        assert f" {part}" in line
    assert "stable=+1.00" in line
    assert "INSOLVENT" not in line
    assert render_ansi(frame(insolvent=True)).endswith(" INSOLVENT")


@pytest.mark.parametrize(
    ("minute", "text"),
    [
        (0.0, "+0h00m"),
        (90.0, "+1h30m"),
        (-5.0, "-0h05m"),
        (1620.0, "+1d03h00m"),
        (0.5, "+0h00m30s"),
        (-0.001, "+0h00m"),
    ],
)
def test_format_time(minute: float, text: str) -> None:
    assert format_time(minute) == text


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (12.34e6, "$12.3M"),
        (950.0, "$950"),
        (999.6e3, "$1.00M"),
        (-1234.0, "-$1.23K"),
        (0.0, "$0.00"),
        (2.5e12, "$2.50T"),
        (1.5e15, "$1.50e+15"),
        (float("nan"), "$nan"),
    ],
)
def test_format_usd(value: float, text: str) -> None:
    assert format_usd(value) == text


def test_format_price_and_param() -> None:
    assert format_price(101_234.5) == "101,234.50"
    assert format_price(0.000012345) == "1.234e-05"
    assert format_param("liquidation_fee_rate", 0.015) == "1.50%"
    assert format_param("trading_fee_fund_share", 0.25) == "25%"
    assert format_param("imr_multiple", 5.0 / 3.0) == "1.67x"
    assert format_param("alloc_hedge", -0.5) == "-0.50"
    assert format_param("min_liquidation_notional_usd", 1000.0) == "$1.00K"
    assert format_param("not_a_lever", 0.123456) == "0.1235"


# ---- the font -------------------------------------------------------------------------------


def test_every_glyph_is_drawn_and_distinct() -> None:
    assert len(FONT_CHARS) == len(set(FONT_CHARS))
    for c in "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ.,%$-+:/x()=_?!":
        assert c in FONT_CHARS
    bitmaps = {c: glyph(c) for c in FONT_CHARS}
    assert all(b.shape == (7, 5) for b in bitmaps.values())
    assert not bitmaps[" "].any()
    assert all(b.any() for c, b in bitmaps.items() if c != " ")
    assert len({b.tobytes() for b in bitmaps.values()}) == len(bitmaps)


def test_glyph_fallbacks() -> None:
    assert np.array_equal(glyph("a"), glyph("A"))
    assert not np.array_equal(glyph("x"), glyph("X"))  # the multiplication x is its own
    assert np.array_equal(glyph("#"), glyph("?"))


def test_text_mask_layout_and_clipping() -> None:
    mask = text_mask("A1")
    assert mask.shape == (7, text_width("A1")) == (7, 11)
    assert np.array_equal(mask[:, :5], glyph("A"))
    assert not mask[:, 5].any()
    assert np.array_equal(mask[:, 6:], glyph("1"))
    assert text_mask("A1", 3).shape == (21, 33)
    img = np.zeros((10, 8), dtype=np.uint8)
    draw_text(img, -3, 5, "A1", 1)  # clipped left and below: no error
    assert np.array_equal(img[5:10, 0:8].astype(bool), mask[0:5, 3:11])


# ---- bad sizes ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"width": 159}, "width"),
        ({"height": 119}, "height"),
        ({"width": 640.0}, "width"),
        ({"height": "400"}, "height"),
        ({"width": True}, "width"),
        ({"width": 100_000}, "width"),
    ],
)
def test_bad_size(kwargs: dict[str, object], name: str) -> None:
    with pytest.raises(ValueError, match=f"^{name} must be"):
        render_rgb(RenderHistory(), **kwargs)  # type: ignore[arg-type]

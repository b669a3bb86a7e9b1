"""What the environment shows a person: a one-line text state and an RGB dashboard frame.

Gymnasium's two render modes are served from one record per decision, :class:`RenderFrame`,
kept in a ring (:class:`RenderHistory`) so that a long episode costs bounded memory:

* :func:`render_ansi` (``render_mode="ansi"``) formats the latest decision as one line of plain
  text, for logs and terminals (Gymnasium's ``ansi`` mode means text, so no colour codes).
* :func:`render_rgb` (``render_mode="rgb_array"``) draws the history as an ``(height, width, 3)``
  ``uint8`` dashboard, which is what ``RecordVideo``, SB3's ``VecVideoRecorder`` and CleanRL's
  ``--capture-video`` consume: price (index, mark, oracle), insurance fund, liquidations per
  decision, and the parameters in force, with a red marker where the episode became
  insolvent.

Everything is drawn with numpy alone, because ``fundgym.envs`` may depend only on numpy,
gymnasium, PyYAML and numba: a plotting library would be a heavy dependency for a few lines
and some text. Text uses the small bitmap font below (:data:`FONT_CHARS`). The drawing is
deterministic (same history, same pixels) and never divides by a range that may be zero: a
flat series is centred in its panel, and values are normalised by their largest magnitude
before they are mapped to pixels, so prices of 1e-6 and funds of 1e15 both draw.

Nothing here runs unless a render mode is set: the environment only builds frames when asked.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from functools import lru_cache
from typing import Any, NamedTuple

import numpy as np

from fundgym.envs.levers import LEVERS

FloatArray = np.ndarray[Any, np.dtype[np.float64]]
BoolArray = np.ndarray[Any, np.dtype[np.bool_]]
ImageArray = np.ndarray[Any, np.dtype[np.uint8]]
Colour = tuple[int, int, int]

#: Smallest frame :func:`render_rgb` draws: below it the panels have no room for a line of text.
MIN_WIDTH = 160
MIN_HEIGHT = 120
#: Largest frame: 8K video; beyond it a typo (an extra zero) would allocate gigabytes.
MAX_SIDE = 8192

# ---- the font -------------------------------------------------------------------------------

#: Each block is ``(characters, seven rows)``: the glyphs of the characters side by side, five
#: pixels wide and separated by a space, ``#`` for ink. ``x`` is a small multiplication-style x
#: (``1.67x``); every other lowercase letter is drawn as its capital, and a character without a
#: glyph as ``?``.
_FONT_BLOCKS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "0123456789",
        (
            ".###. ..#.. .###. ##### ...#. ##### ..##. ##### .###. .###.",
            "#...# .##.. #...# ...#. ..##. #.... .#... ....# #...# #...#",
            "#..## ..#.. ....# ..#.. .#.#. ####. #.... ...#. #...# #...#",
            "#.#.# ..#.. ...#. ...#. #..#. ....# ####. ..#.. .###. .####",
            "##..# ..#.. ..#.. ....# ##### ....# #...# .#... #...# ....#",
            "#...# ..#.. .#... #...# ...#. #...# #...# .#... #...# ...#.",
            ".###. .###. ##### .###. ...#. .###. .###. .#... .###. .##..",
        ),
    ),
    (
        "ABCDEFGHIJ",
        (
            ".###. ####. .###. ###.. ##### ##### .###. #...# .###. ..###",
            "#...# #...# #...# #..#. #.... #.... #...# #...# ..#.. ...#.",
            "#...# #...# #.... #...# #.... #.... #.... #...# ..#.. ...#.",
            "##### ####. #.... #...# ####. ####. #.### ##### ..#.. ...#.",
            "#...# #...# #.... #...# #.... #.... #...# #...# ..#.. ...#.",
            "#...# #...# #...# #..#. #.... #.... #...# #...# ..#.. #..#.",
            "#...# ####. .###. ###.. ##### #.... .#### #...# .###. .##..",
        ),
    ),
    (
        "KLMNOPQRST",
        (
            "#...# #.... #...# #...# .###. ####. .###. ####. .#### #####",
            "#..#. #.... ##.## #...# #...# #...# #...# #...# #.... ..#..",
            "#.#.. #.... #.#.# ##..# #...# #...# #...# #...# #.... ..#..",
            "##... #.... #.#.# #.#.# #...# ####. #...# ####. .###. ..#..",
            "#.#.. #.... #...# #..## #...# #.... #.#.# #.#.. ....# ..#..",
            "#..#. #.... #...# #...# #...# #.... #..#. #..#. ....# ..#..",
            "#...# ##### #...# #...# .###. #.... .##.# #...# ####. ..#..",
        ),
    ),
    (
        "UVWXYZ .,%",
        (
            "#...# #...# #...# #...# #...# ##### ..... ..... ..... ##...",
            "#...# #...# #...# #...# #...# ....# ..... ..... ..... ##..#",
            "#...# #...# #...# .#.#. .#.#. ...#. ..... ..... ..... ...#.",
            "#...# #...# #.#.# ..#.. ..#.. ..#.. ..... ..... ..... ..#..",
            "#...# #...# #.#.# .#.#. ..#.. .#... ..... ..... .##.. .#...",
            "#...# .#.#. #.#.# #...# ..#.. #.... ..... .##.. ..#.. #..##",
            ".###. ..#.. .#.#. #...# ..#.. ##### ..... .##.. .#... ...##",
        ),
    ),
    (
        "$-+:/x()=_",
        (
            "..#.. ..... ..... ..... ..... ..... ...#. .#... ..... .....",
            ".#### ..... ..#.. .##.. ....# ..... ..#.. ..#.. ..... .....",
            "#.#.. ..... ..#.. .##.. ...#. #...# .#... ...#. ##### .....",
            ".###. ##### ##### ..... ..#.. .#.#. .#... ...#. ..... .....",
            "..#.# ..... ..#.. .##.. .#... ..#.. .#... ...#. ##### .....",
            "####. ..... ..#.. .##.. #.... .#.#. ..#.. ..#.. ..... .....",
            "..#.. ..... ..... ..... ..... #...# ...#. .#... ..... #####",
        ),
    ),
    (
        "?!",
        (
            ".###. ..#..",
            "#...# ..#..",
            "....# ..#..",
            "...#. ..#..",
            "..#.. ..#..",
            "..... .....",
            "..#.. ..#..",
        ),
    ),
)
GLYPH_W = 5
GLYPH_H = 7
#: Horizontal advance per character: the glyph and one blank column.
ADVANCE = GLYPH_W + 1


def _parse_font() -> tuple[str, BoolArray]:
    """The characters and their ``(n, 7, 6)`` bitmaps (the sixth column blank), from the blocks.

    Raises:
        ValueError: A block whose rows do not hold exactly one 5x7 glyph per character (an
            editing slip in the table above, caught at import rather than as garbled text).
    """
    chars = ""
    glyphs: list[BoolArray] = []
    for block_chars, rows in _FONT_BLOCKS:
        n = len(block_chars)
        if len(rows) != GLYPH_H or any(len(r) != n * ADVANCE - 1 for r in rows):
            raise ValueError(f"font block {block_chars!r}: need {GLYPH_H} rows of {n} glyphs")
        ink = np.array([[c == "#" for c in r + "."] for r in rows], dtype=bool)
        glyphs.extend(ink[:, i * ADVANCE : (i + 1) * ADVANCE] for i in range(n))
        chars += block_chars
    if len(set(chars)) != len(chars):
        raise ValueError("font: a character has two glyphs")
    return chars, np.stack(glyphs)


#: Every character the font draws (``?`` stands in for the rest; lowercase maps to capitals).
FONT_CHARS, _GLYPHS = _parse_font()
_GLYPH_INDEX = {c: i for i, c in enumerate(FONT_CHARS)}


def glyph(char: str) -> BoolArray:
    """The 7x5 bitmap ``char`` is drawn with (after the lowercase and ``?`` fallbacks)."""
    return _GLYPHS[_glyph_index(char), :, :GLYPH_W].copy()


def _glyph_index(char: str) -> int:
    """Index of the glyph for ``char``: itself, else its capital, else ``?``."""
    index = _GLYPH_INDEX.get(char)
    if index is None:
        index = _GLYPH_INDEX.get(char.upper(), _GLYPH_INDEX["?"])
    return index


@lru_cache(maxsize=1024)
def text_mask(text: str, scale: int = 1) -> BoolArray:
    """Ink of ``text`` as a ``(7 * scale, text_width(text, scale))`` boolean array.

    Cached (read-only): a dashboard redraws the same labels every frame.
    """
    if not text:
        mask = np.zeros((GLYPH_H * scale, 0), dtype=bool)
    else:
        index = np.fromiter((_glyph_index(c) for c in text), dtype=np.intp, count=len(text))
        strip = _GLYPHS[index].transpose(1, 0, 2).reshape(GLYPH_H, -1)[:, :-1]
        mask = np.repeat(np.repeat(strip, scale, axis=0), scale, axis=1)
    mask.setflags(write=False)
    return mask


def text_width(text: str, scale: int = 1) -> int:
    """Width in pixels of ``text`` drawn at ``scale`` (no trailing blank column)."""
    return max(0, len(text) * ADVANCE - 1) * scale


def draw_text(
    img: ImageArray, x: int, y: int, text: str, colour: int | Colour, scale: int = 1
) -> int:
    """Draw ``text`` with its top-left corner at ``(x, y)``, clipped to the image.

    ``img`` is an RGB image (``colour`` an RGB triple) or a plane of palette indices
    (``colour`` an index).

    Returns:
        The text's width in pixels, so that callers can place the next piece after it.
    """
    mask = text_mask(text, scale)
    h, w = mask.shape
    x0, y0 = max(x, 0), max(y, 0)
    x1, y1 = min(x + w, img.shape[1]), min(y + h, img.shape[0])
    if x1 > x0 and y1 > y0:
        img[y0:y1, x0:x1][mask[y0 - y : y1 - y, x0 - x : x1 - x]] = colour
    return int(w)


# ---- one decision's record and the ring of them ---------------------------------------------


@dataclass(frozen=True)
class RenderFrame:
    """One decision's snapshot, everything either render mode shows.

    Attributes:
        minute: Minutes since the episode started, at this decision.
        index_price: The reference (spot index) price.
        mark_price: The venue's mark price, which margins are measured against.
        oracle_price: The on-chain oracle's price (may lag the index).
        fund_usd: Insurance fund balance.
        open_interest_usd: Open interest, one side.
        liquidated_usd: Notional liquidated during this decision.
        params: Parameters in force, natural units, keyed by lever name
            (:data:`fundgym.envs.levers.LEVERS`). Copied on construction, so that a caller
            reusing one dict for every step cannot rewrite the history.
        insolvent: Whether the exchange is insolvent at this decision.
        scenario: Name of the scenario being played.
    """

    minute: float
    index_price: float
    mark_price: float
    oracle_price: float
    fund_usd: float
    open_interest_usd: float
    liquidated_usd: float
    params: dict[str, float]
    insolvent: bool
    scenario: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", {str(k): float(v) for k, v in self.params.items()})


class RenderHistory:
    """The last ``capacity`` frames of an episode, oldest first (a ring).

    The environment appends one frame per decision while a render mode is set and clears the
    ring on reset; a bounded ring keeps a long or endless episode at constant memory, and the
    dashboard then shows the most recent ``capacity`` decisions.
    """

    def __init__(self, capacity: int = 1024) -> None:
        """Make an empty ring.

        Args:
            capacity: Most frames kept; the oldest is dropped when a new one arrives.

        Raises:
            ValueError: ``capacity`` is not an int of at least 1.
        """
        if isinstance(capacity, bool) or not isinstance(capacity, int | np.integer):
            raise ValueError(f"capacity must be an int >= 1, got {capacity!r}")
        if capacity < 1:
            raise ValueError(f"capacity must be an int >= 1, got {capacity!r}")
        self._frames: deque[RenderFrame] = deque(maxlen=int(capacity))

    @property
    def capacity(self) -> int:
        """Most frames kept."""
        maxlen = self._frames.maxlen
        assert maxlen is not None  # set in __init__
        return maxlen

    def clear(self) -> None:
        """Forget every frame (a new episode starts)."""
        self._frames.clear()

    def append(self, frame: RenderFrame) -> None:
        """Add the newest frame, dropping the oldest when full."""
        self._frames.append(frame)

    @property
    def frames(self) -> list[RenderFrame]:
        """The frames kept, oldest first (a copy: the ring may move on)."""
        return list(self._frames)

    def __len__(self) -> int:
        return len(self._frames)


# ---- numbers as text ------------------------------------------------------------------------

#: Short names, ``(text line, dashboard)``, of the levers a frame usually carries; any other
#: parameter shows under its own name.
_LABELS: dict[str, tuple[str, str]] = {
    "liquidation_fee_rate": ("fee", "LIQ FEE"),
    "liquidation_fee_fund_share": ("fee_fund", "LIQ FEE TO FUND"),
    "mmr": ("mmr", "MMR"),
    "imr_multiple": ("imr/mmr", "IMR / MMR"),
    "imr": ("imr", "IMR"),
    "trading_fee_fund_share": ("tfee_fund", "TRADE FEE TO FUND"),
    "alloc_stable": ("stable", "ALLOC STABLE"),
    "alloc_yield": ("yield", "ALLOC YIELD"),
    "alloc_volatile": ("volatile", "ALLOC VOLATILE"),
    "alloc_hedge": ("hedge", "ALLOC HEDGE"),
}


def format_time(minute: float) -> str:
    """Episode time as a signed duration: ``+1h30m``, ``+2d03h00m``, ``+0h00m30s``, ``-0h05m``.

    Minutes count from the episode start (negative before it), so a sign and
    hours read better than a four-digit minute count.
    """
    if not math.isfinite(minute):
        return str(minute)
    total_s = round(abs(minute) * 60.0)
    sign = "-" if minute < 0 and total_s else "+"
    days, rest = divmod(total_s, 86_400)
    hours, rest = divmod(rest, 3_600)
    mins, secs = divmod(rest, 60)
    out = f"{sign}{days}d{hours:02d}h{mins:02d}m" if days else f"{sign}{hours}h{mins:02d}m"
    return out + (f"{secs:02d}s" if secs else "")


def format_amount(value: float, currency: str = "") -> str:
    """Three significant figures and a K/M/B/T suffix: ``12.3M``, ``-950``, ``$1.23B``.

    Past a thousand trillion the suffixes run out and the number is written ``1.23e+15``.
    ``currency`` goes between the sign and the digits.
    """
    if not math.isfinite(value):
        return f"{currency}{value}"
    sign = "-" if value < 0 else ""
    a = abs(value)
    for scale, suffix in ((1.0, ""), (1e3, "K"), (1e6, "M"), (1e9, "B"), (1e12, "T")):
        v = a / scale
        if v < 999.5:
            digits = 2 if v < 9.995 else 1 if v < 99.95 else 0
            return f"{sign}{currency}{v:.{digits}f}{suffix}"
    return f"{sign}{currency}{a:.2e}"


def format_usd(value: float) -> str:
    """Dollars as :func:`format_amount`: ``$12.3M``, ``-$950``, ``$1.23e+15``."""
    return format_amount(value, "$")


def format_price(value: float) -> str:
    """A price: ``101,234.50``; ``1.234e-05`` below 1 and ``1.235e+09`` from a billion."""
    if not math.isfinite(value):
        return str(value)
    if 1.0 <= abs(value) < 1e9:
        return f"{value:,.2f}"
    return f"{value:.4g}"


def format_param(name: str, value: float) -> str:
    """A parameter in its lever's unit: ``1.50%`` for fractions, ``1.67x`` for multiples.

    The unit comes from :data:`~fundgym.envs.levers.LEVERS`, so a new lever formats itself;
    allocation logits are signed (``+1.00``), anything else has four significant figures.
    """
    if not math.isfinite(value):
        return str(value)
    lever = LEVERS.get(name)
    unit = lever.unit if lever is not None else ""
    if unit.startswith("fraction"):
        pct = 100.0 * value
        return f"{pct:.0f}%" if abs(pct) >= 9.995 else f"{pct:.2f}%"
    if unit.startswith("multiple"):
        return f"{value:.2f}x"
    if unit.startswith("logit"):
        return f"{value:+.2f}"
    if unit == "USD":
        return format_usd(value)
    return f"{value:.4g}"


def render_ansi(frame: RenderFrame) -> str:
    """The decision as one line of text.

    Format (fields separated by spaces, the parameters after ``|``, in ``frame.params``'s
    order, under the short names of ``_LABELS``)::

        oct_10_2025 t=+1h30m mark=101,234.50 fund=$12.3M oi=$45.6M liq=$1.20M | fee=1.50%
        fee_fund=100% mmr=3.00% imr=1.67x tfee_fund=10% stable=+1.00 ... INSOLVENT

    (one line; wrapped here). Times as :func:`format_time`, prices as :func:`format_price`,
    dollars as :func:`format_usd`, parameters as :func:`format_param`. ``INSOLVENT`` ends the
    line only when the exchange is insolvent.
    """
    params = " ".join(
        f"{_LABELS.get(name, (name, ''))[0]}={format_param(name, value)}"
        for name, value in frame.params.items()
    )
    line = (
        f"{frame.scenario} t={format_time(frame.minute)} mark={format_price(frame.mark_price)}"
        f" fund={format_usd(frame.fund_usd)} oi={format_usd(frame.open_interest_usd)}"
        f" liq={format_usd(frame.liquidated_usd)} | {params}"
    )
    line = line.replace("\n", " ").replace("\r", " ")
    return line + " INSOLVENT" if frame.insolvent else line


# ---- the dashboard --------------------------------------------------------------------------


class Ink(IntEnum):
    """The dashboard's colours, as indices into :data:`PALETTE`.

    The frame is drawn as one byte per pixel and coloured once at the end: filling and masking
    a single byte plane is several times faster than writing RGB triples at every step.
    """

    BACKGROUND = 0
    PANEL = 1
    BORDER = 2
    GRID = 3
    TEXT = 4
    DIM_TEXT = 5
    INDEX = 6
    MARK = 7
    ORACLE = 8
    FUND = 9
    LIQUIDATED = 10
    PARAM = 11
    TRACK = 12
    #: The insolvency marker and label only, so that this colour appearing means insolvency.
    INSOLVENT = 13


_RGB: dict[Ink, Colour] = {
    Ink.BACKGROUND: (14, 17, 23),
    Ink.PANEL: (24, 28, 36),
    Ink.BORDER: (62, 68, 82),
    Ink.GRID: (44, 49, 60),
    Ink.TEXT: (205, 210, 220),
    Ink.DIM_TEXT: (130, 138, 152),
    Ink.INDEX: (90, 150, 255),
    Ink.MARK: (255, 190, 60),
    Ink.ORACLE: (80, 210, 140),
    Ink.FUND: (70, 200, 220),
    Ink.LIQUIDATED: (220, 110, 230),
    Ink.PARAM: (120, 160, 255),
    Ink.TRACK: (50, 56, 70),
    Ink.INSOLVENT: (240, 40, 40),
}
#: RGB of each :class:`Ink`, row ``ink``.
PALETTE: ImageArray = np.array([_RGB[ink] for ink in Ink], dtype=np.uint8)


class Box(NamedTuple):
    """A rectangle of the frame: left, top, width, height in pixels."""

    x: int
    y: int
    w: int
    h: int


def _check_side(name: str, value: object, minimum: int) -> int:
    """``value`` as an int in ``[minimum, MAX_SIDE]``; else a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    if not minimum <= value <= MAX_SIDE:
        raise ValueError(f"{name} must be between {minimum} and {MAX_SIDE} pixels, got {value}")
    return int(value)


def _column(frames: list[RenderFrame], field: str) -> FloatArray:
    """One field of every frame as float64, non-finite values as NaN (drawn as gaps)."""
    values = np.array([getattr(f, field) for f in frames], dtype=np.float64)
    return np.where(np.isfinite(values), values, np.nan)


class _Scale(NamedTuple):
    """A panel's vertical scale, in units of ``norm`` (the largest magnitude shown).

    Dividing by ``norm`` first keeps every number of the mapping within a few units, so no
    subtraction overflows (fund balances of 1e300) and no span underflows (prices of 1e-300).
    """

    norm: float
    low: float
    high: float

    def value(self, frac: float) -> float:
        """The value at height ``frac`` of the panel (0 bottom, 1 top), for axis labels."""
        return (self.low + frac * (self.high - self.low)) * self.norm

    def rows(self, values: FloatArray, height: int) -> FloatArray:
        """Fractional pixel rows of ``values`` in a plot ``height`` tall (row 0 on top)."""
        return (self.high - values / self.norm) / (self.high - self.low) * (height - 1)


def _scale(series: list[FloatArray], pad_frac: float = 0.05, floor_zero: bool = False) -> _Scale:
    """A vertical scale showing every finite value of ``series``, padded by ``pad_frac``.

    A flat (or all-missing) series gets a span of 1% of its level, or of 1 around zero, so
    that it draws as a line in the middle instead of dividing by zero. ``floor_zero`` starts
    the scale at zero (bars).
    """
    values = np.concatenate(series)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return _Scale(1.0, -1.0, 1.0)
    low, high = float(finite.min()), float(finite.max())
    if floor_zero:
        low = min(low, 0.0)
    norm = max(abs(low), abs(high)) or 1.0
    low, high = low / norm, high / norm
    if high - low <= 1e-9:
        half = 0.01 * abs(high) or 1.0
        return _Scale(norm, (0.0 if floor_zero else low - half), high + half)
    pad = pad_frac * (high - low)
    return _Scale(norm, (low if floor_zero else low - pad), high + pad)


def _slot_centres(n: int, width: int) -> FloatArray:
    """x (fractional column) of each of ``n`` decisions: the centres of equal slots."""
    return (np.arange(n, dtype=np.float64) + 0.5) * (width / n) - 0.5


def _line_mask(rows: FloatArray, centres: FloatArray, width: int, height: int) -> BoolArray:
    """Pixels of the polyline through ``(centres[i], rows[i])`` in a ``height x width`` plot.

    Each column is filled between the line's lowest and highest points in it: the value
    interpolated at the column, the midpoints to its neighbours (so steep segments stay
    connected), and every sample falling in the column (so that with more decisions than
    columns a spike is not skipped). A NaN row breaks the line: the segments touching it are
    left out, and a valid sample between two NaNs is drawn as a point.
    """
    cols = np.arange(width, dtype=np.float64)
    valid = np.isfinite(rows)
    filled = np.where(valid, rows, 0.0)  # NaN-free arithmetic: the gaps are masked below
    gap = np.interp(cols, centres, (~valid).astype(np.float64)) > 0.0
    at_col = np.interp(cols, centres, filled)
    low, high = at_col.copy(), at_col.copy()
    sample_col = np.clip(np.rint(centres[valid]), 0, width - 1).astype(np.intp)
    sample_row = np.rint(rows[valid]).astype(np.intp)
    np.minimum.at(low, sample_col, rows[valid])
    np.maximum.at(high, sample_col, rows[valid])
    mid = 0.5 * (at_col[1:] + at_col[:-1])
    joined = ~(gap[1:] | gap[:-1])
    low[1:] = np.where(joined, np.minimum(low[1:], mid), low[1:])
    high[1:] = np.where(joined, np.maximum(high[1:], mid), high[1:])
    low[:-1] = np.where(joined, np.minimum(low[:-1], mid), low[:-1])
    high[:-1] = np.where(joined, np.maximum(high[:-1], mid), high[:-1])
    r = np.arange(height, dtype=np.float64)[:, None]
    mask = (r >= np.rint(low)) & (r <= np.rint(high)) & ~gap
    mask[sample_row, sample_col] = True
    return np.asarray(mask)


def _bar_mask(values: FloatArray, width: int, height: int, scale: _Scale) -> BoolArray:
    """Pixels of one bar per decision (the largest of those sharing a column), from zero.

    A positive value gets at least one pixel, so that a small liquidation is still seen; a
    one-column gap separates bars when each has three or more columns.
    """
    n = values.size
    starts = np.arange(width, dtype=np.intp) * n // width
    per_col = np.maximum.reduceat(np.nan_to_num(np.maximum(values, 0.0), nan=0.0), starts)
    tops = np.where(per_col > 0.0, np.floor(scale.rows(per_col, height)), height)
    mask = np.arange(height)[:, None] >= tops[None, :]
    if width >= 3 * n:
        mask[:, np.append(starts[1:] != starts[:-1], True)] = False  # each slot's last column
    return np.asarray(mask)


class _Dashboard:
    """One frame being drawn: its palette-index plane, its text scale and layout helpers."""

    def __init__(self, width: int, height: int) -> None:
        self.img: ImageArray = np.full((height, width), Ink.BACKGROUND, dtype=np.uint8)
        #: Text grows with the frame, so that a 4K video is as legible as the 640x400 default.
        self.s = max(1, min(width // 640, height // 400))
        self.line_h = (GLYPH_H + 3) * self.s

    def rgb(self) -> ImageArray:
        """The finished frame in RGB (``np.take`` is the fastest palette lookup numpy has)."""
        return np.take(PALETTE, self.img, axis=0)

    def fill(self, box: Box, colour: Ink) -> None:
        """Fill a rectangle, clipped to the frame (an empty one fills nothing)."""
        y0, x0 = max(box.y, 0), max(box.x, 0)
        self.img[y0 : max(box.y + box.h, y0), x0 : max(box.x + box.w, x0)] = colour

    def text(self, x: int, y: int, text: str, colour: Ink = Ink.TEXT) -> int:
        """Draw ``text`` at the frame's text scale; returns its width."""
        return draw_text(self.img, x, y, text, colour, self.s)

    def legend(self, x: int, y: int, parts: list[tuple[str, Ink]]) -> None:
        """Draw coloured pieces of text one after the other, two spaces apart."""
        for text, colour in parts:
            x += self.text(x, y, text, colour) + 2 * ADVANCE * self.s

    def panel(self, box: Box, parts: list[tuple[str, Ink]]) -> Box:
        """Draw a bordered panel with a legend line; returns the area below the legend."""
        self.fill(box, Ink.BORDER)
        self.fill(Box(box.x + 1, box.y + 1, box.w - 2, box.h - 2), Ink.PANEL)
        pad = 2 * self.s
        self.legend(box.x + pad + 1, box.y + pad + 1, parts)
        top = box.y + pad + self.line_h
        return Box(box.x + pad + 1, top, box.w - 2 * pad - 2, box.y + box.h - pad - 1 - top)

    def plot_area(self, inner: Box, labels: tuple[str, str], label_w: int) -> Box:
        """Label a scale's top and bottom in a column at the right; returns the plot area.

        Args:
            inner: The panel's area below its legend.
            labels: Texts for the top and the bottom of the scale.
            label_w: Width of the label column, shared by the time panels.
        """
        plot = Box(inner.x, inner.y, max(inner.w - label_w - 3 * self.s, 1), inner.h)
        label_x = plot.x + plot.w + 3 * self.s
        self.text(label_x, plot.y, labels[0], Ink.DIM_TEXT)
        self.text(label_x, plot.y + plot.h - GLYPH_H * self.s, labels[1], Ink.DIM_TEXT)
        self.fill(Box(plot.x, plot.y, plot.w, 1), Ink.GRID)
        self.fill(Box(plot.x, plot.y + plot.h - 1, plot.w, 1), Ink.GRID)
        return plot

    def paint(self, plot: Box, mask: BoolArray, colour: Ink) -> None:
        """Colour the pixels of ``mask`` (plot-sized) inside ``plot``."""
        self.img[plot.y : plot.y + plot.h, plot.x : plot.x + plot.w][mask] = colour

    def zero_line(self, plot: Box, scale: _Scale) -> None:
        """A grid line at zero, when zero is inside the scale (a fund going negative)."""
        if scale.low < 0.0 < scale.high:
            row = round(float(scale.rows(np.zeros(1), plot.h)[0]))
            self.fill(Box(plot.x, plot.y + row, plot.w, 1), Ink.GRID)

    def marker(self, plot: Box, column: int) -> None:
        """The insolvency marker: a vertical line at ``column`` of ``plot``."""
        self.fill(Box(plot.x + column, plot.y, self.s, plot.h), Ink.INSOLVENT)


def _axis_labels(
    scales: list[_Scale], formats: list[Callable[[float], str]], room: int, s: int
) -> tuple[list[tuple[str, str]], int]:
    """Top and bottom labels of each panel's scale, and the width of the column they share.

    The three time panels share one label column, so that their plots are equally wide and a
    decision sits at the same x in all of them (the insolvency marker lines up). Labels are
    written in full (``101,234.50``) unless they would take over a quarter of ``room``, the
    panels' width; then all are shortened (``101K``) so that a small frame keeps its plots.
    """
    for fmts in (formats, [format_amount] * len(formats)):
        labels = [(f(sc.value(1.0)), f(sc.value(0.0))) for sc, f in zip(scales, fmts, strict=True)]
        label_w = max(text_width(text, s) for pair in labels for text in pair)
        if label_w <= room // 4:
            break
    return labels, label_w


def _layout(width: int, height: int, d: _Dashboard) -> tuple[Box, Box, Box, Box]:
    """Price, fund, liquidation panels stacked on the left, parameters on the right."""
    gap = 3 * d.s
    top = d.line_h + 2 * d.s
    left_w = int(width * 0.68)
    avail = height - top - gap
    price_h, fund_h = int(avail * 0.42), int(avail * 0.30)
    liq_h = avail - price_h - fund_h - 2 * gap
    x = gap
    price = Box(x, top, left_w - x, price_h)
    fund = Box(x, top + price_h + gap, left_w - x, fund_h)
    liq = Box(x, fund.y + fund_h + gap, left_w - x, liq_h)
    params = Box(left_w + gap, top, width - left_w - 2 * gap, height - top - gap)
    return price, fund, liq, params


def _param_fraction(name: str, value: float) -> tuple[float, float] | None:
    """Where ``value`` and the lever's default sit in its action range, each in [0, 1].

    The action range (logarithmic where the lever's is) is what a policy can choose from, so
    the bar reads as "how far along the lever is"; a lever without one uses finite hard
    bounds, and a parameter without either gets no bar.
    """
    lever = LEVERS.get(name)
    if lever is None or not math.isfinite(value):
        return None
    if lever.action is not None:
        low, high, log = lever.action.low, lever.action.high, lever.action.log
    elif math.isfinite(lever.bounds.low) and math.isfinite(lever.bounds.high):
        low, high, log = lever.bounds.low, lever.bounds.high, False
    else:
        return None

    def frac(v: float) -> float:
        if log:
            f = math.log(v / low) / math.log(high / low) if v > 0.0 else 0.0
        else:
            f = (v - low) / (high - low)
        return min(max(f, 0.0), 1.0)

    return frac(value), frac(lever.default)


def _draw_params(d: _Dashboard, box: Box, params: dict[str, float]) -> None:
    """Each parameter: its name and value on a line, a bar of its place in its range below.

    A tick on the bar marks the lever's default, so a move away from the venue's usual
    setting is visible at a glance. Rows that do not fit are left out (``...``).
    """
    inner = d.panel(box, [("PARAMETERS IN FORCE", Ink.TEXT)])
    s = d.s
    bar_h = 3 * s
    row_h = d.line_h + bar_h + 3 * s
    if not params:
        d.text(inner.x, inner.y, "NONE", Ink.DIM_TEXT)
        return
    y = inner.y
    for i, (name, value) in enumerate(params.items()):
        if y + row_h > inner.y + inner.h:
            d.text(inner.x, y, f"... {len(params) - i} MORE", Ink.DIM_TEXT)
            return
        label = _LABELS.get(name, ("", name.upper().replace("_", " ")))[1]
        shown = format_param(name, value)
        value_w = text_width(shown, s)
        room = max((inner.w - value_w - ADVANCE * s) // (ADVANCE * s), 0)
        d.text(inner.x, y, label[:room], Ink.DIM_TEXT)
        d.text(inner.x + inner.w - value_w, y, shown, Ink.TEXT)
        where = _param_fraction(name, value)
        if where is not None:
            bar_y = y + GLYPH_H * s + 2 * s
            d.fill(Box(inner.x, bar_y, inner.w, bar_h), Ink.TRACK)
            d.fill(Box(inner.x, bar_y, round(where[0] * inner.w), bar_h), Ink.PARAM)
            tick_x = inner.x + min(round(where[1] * inner.w), inner.w - 1)
            d.fill(Box(tick_x, bar_y - s, max(s, 1), bar_h + 2 * s), Ink.TEXT)
        y += row_h


def render_rgb(history: RenderHistory, width: int = 640, height: int = 400) -> ImageArray:
    """The dashboard of ``history`` as an ``(height, width, 3)`` ``uint8`` RGB frame.

    Top, a title line: scenario, time, mark, fund and open interest of the latest decision,
    and ``INSOLVENT`` in red once insolvent. Left, three panels over the decisions kept (one
    slot per decision, oldest on the left): index, mark and oracle prices; the insurance fund;
    notional liquidated per decision, as bars. Right, the parameters in force at the latest
    decision, as labelled bars over their action ranges. A red vertical line crosses the three
    panels at the first insolvent decision. An empty history gives a frame reading ``NO DATA``.

    Args:
        history: The decisions to draw.
        width: Frame width in pixels, an int from ``MIN_WIDTH`` (160) to ``MAX_SIDE``.
        height: Frame height in pixels, an int from ``MIN_HEIGHT`` (120) to ``MAX_SIDE``.

    Returns:
        The frame; the same history always gives the same pixels.

    Raises:
        ValueError: ``width`` or ``height`` is not an int in its range (the message names it).
    """
    width = _check_side("width", width, MIN_WIDTH)
    height = _check_side("height", height, MIN_HEIGHT)
    d = _Dashboard(width, height)
    frames = history.frames
    s = d.s
    if not frames:
        d.text(3 * s, 2 * s, "FUNDGYM", Ink.DIM_TEXT)
        msg = "NO DATA"
        d.text((width - text_width(msg, s)) // 2, (height - GLYPH_H * s) // 2, msg, Ink.TEXT)
        return d.rgb()

    last = frames[-1]
    title = (
        f"{last.scenario.upper()}  T={format_time(last.minute).upper()}"
        f"  MARK {format_price(last.mark_price)}  FUND {format_usd(last.fund_usd)}"
        f"  OI {format_usd(last.open_interest_usd)}  N={len(frames)}"
    )
    d.text(3 * s, 2 * s, title)
    insolvent = np.array([f.insolvent for f in frames], dtype=bool)
    if insolvent.any():
        label_w = text_width("INSOLVENT", s) + 6 * s  # over the title's end if it is long
        d.fill(Box(width - label_w, 0, label_w, d.line_h + s), Ink.BACKGROUND)
        d.text(width - label_w + 3 * s, 2 * s, "INSOLVENT", Ink.INSOLVENT)

    price_box, fund_box, liq_box, param_box = _layout(width, height, d)
    index, mark, oracle, fund, liquidated = (
        _column(frames, f)
        for f in ("index_price", "mark_price", "oracle_price", "fund_usd", "liquidated_usd")
    )
    price_scale, fund_scale = _scale([index, mark, oracle]), _scale([fund])
    liq_scale = _scale([liquidated], pad_frac=0.0, floor_zero=True)
    labels, label_w = _axis_labels(
        [price_scale, fund_scale, liq_scale], [format_price, format_usd, format_usd], price_box.w, s
    )
    first_insolvent = int(np.argmax(insolvent)) if insolvent.any() else None

    def plot(box: Box, legend: list[tuple[str, Ink]], k: int) -> tuple[Box, FloatArray]:
        """Draw panel ``k``'s chrome; its plot area and the decisions' x in it."""
        area = d.plot_area(d.panel(box, legend), labels[k], label_w)
        return area, _slot_centres(len(frames), area.w)

    def marker(area: Box, centres: FloatArray) -> None:
        if first_insolvent is not None:
            d.marker(area, min(max(round(float(centres[first_insolvent])), 0), area.w - 1))

    # Price: index under oracle under mark, the mark (what margins use) drawn last.
    legend = [("PRICE", Ink.TEXT), ("INDEX", Ink.INDEX), ("ORACLE", Ink.ORACLE), ("MARK", Ink.MARK)]
    area, centres = plot(price_box, legend, 0)
    for series, colour in ((index, Ink.INDEX), (oracle, Ink.ORACLE), (mark, Ink.MARK)):
        rows = price_scale.rows(series, area.h)
        d.paint(area, _line_mask(rows, centres, area.w, area.h), colour)
    marker(area, centres)

    area, centres = plot(
        fund_box, [("INSURANCE FUND", Ink.FUND), (format_usd(last.fund_usd), Ink.TEXT)], 1
    )
    d.zero_line(area, fund_scale)
    d.paint(area, _line_mask(fund_scale.rows(fund, area.h), centres, area.w, area.h), Ink.FUND)
    marker(area, centres)

    total = float(np.nansum(np.maximum(liquidated, 0.0)))
    legend = [
        ("LIQUIDATED PER DECISION", Ink.LIQUIDATED),
        (f"LAST {format_usd(last.liquidated_usd)}", Ink.TEXT),
        (f"TOTAL {format_usd(total)}", Ink.DIM_TEXT),
    ]
    area, centres = plot(liq_box, legend, 2)
    d.paint(area, _bar_mask(liquidated, area.w, area.h, liq_scale), Ink.LIQUIDATED)
    marker(area, centres)

    _draw_params(d, param_box, last.params)
    return d.rgb()

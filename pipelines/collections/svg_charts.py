"""Inline SVG charts for the offline collection report (report_html.py): plain strings, no JavaScript, no URLs.

Every chart is `<svg role="img" aria-label=...>` with a `<title>` on each mark giving the exact numbers (the browser's
tooltip). Every string that reaches the markup is escaped here. A chart function returns "" when there is nothing to
draw (no items, or all zero); the caller then writes "none".
"""

import math
from collections.abc import Sequence
from html import escape

BAR = "#2f6db5"
LINE = "#c2410c"
GRID = "#d5d9e0"
INK = "#1f2328"
MUTED = "#57606a"
MAX_BARS = 20
LABEL_CHARS = 24

Item = tuple[str, float]


def truncate(text: str, limit: int = LABEL_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def fmt(value: float) -> str:
    """An integer without decimals, anything else with at most two."""
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.2f}"


def cap_items(items: Sequence[Item], limit: int = MAX_BARS) -> list[Item]:
    """At most `limit` bars: the largest `limit - 1` and one "other" bar summing the rest."""
    if len(items) <= limit:
        return list(items)
    ranked = sorted(items, key=lambda item: -item[1])
    rest = ranked[limit - 1 :]
    return ranked[: limit - 1] + [(f"other ({len(rest)})", sum(value for _, value in rest))]


def _svg(width: float, height: float, label: str, body: Sequence[str]) -> str:
    return (
        f'<svg role="img" aria-label="{escape(label)}" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" font-size="12" fill="{INK}">'
        f"<title>{escape(label)}</title>{''.join(body)}</svg>"
    )


def _text(x: float, y: float, text: str, anchor: str = "start", extra: str = "") -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}"{extra}>{escape(text)}</text>'


def bar_chart(items: Sequence[Item], label: str, unit: str = "images", limit: int = MAX_BARS) -> str:
    """Horizontal bars, one row per category: the label left (truncated; the full text in the tooltip)."""
    rows = cap_items([(name, value) for name, value in items], limit)
    top = max((value for _, value in rows), default=0)
    if top <= 0:
        return ""
    left, plot, row_h = 190, 280, 24
    width, height = left + plot + 70, row_h * len(rows) + 8
    body = []
    for i, (name, value) in enumerate(rows):
        y = 4 + i * row_h
        w = max(1.0, plot * value / top) if value > 0 else 0.0
        body.append(
            f"<g><title>{escape(name)}: {fmt(value)} {escape(unit)}</title>"
            + _text(left - 8, y + 16, truncate(name), "end")
            + f'<rect x="{left}" y="{y + 3}" width="{w:.1f}" height="{row_h - 6}" fill="{BAR}" rx="2"/>'
            + _text(left + w + 6, y + 16, fmt(value), extra=f' fill="{MUTED}"')
            + "</g>"
        )
    return _svg(width, height, label, body)


def column_chart(items: Sequence[Item], label: str, unit: str = "images") -> str:
    """Vertical bars for an ordered axis (a histogram): every category keeps its place, zeros included."""
    top = max((value for _, value in items), default=0)
    if top <= 0:
        return ""
    left, bottom, plot_h, col_w = 48, 36, 180, 52
    width, height = left + col_w * len(items) + 16, plot_h + bottom + 12
    top, steps = axis_max(top)
    body = _y_axis(left, 12, plot_h, top, width - 8, steps)
    for i, (name, value) in enumerate(items):
        h = plot_h * value / top
        x = left + i * col_w
        body.append(
            f"<g><title>{escape(name)}: {fmt(value)} {escape(unit)}</title>"
            f'<rect x="{x + 4}" y="{12 + plot_h - h:.1f}" width="{col_w - 8}" height="{h:.1f}" fill="{BAR}"/>'
            + _text(x + col_w / 2, 12 + plot_h + 16, truncate(name, 9), "middle", f' fill="{MUTED}"')
            + "</g>"
        )
    return _svg(width, height, label, body)


def axis_max(top: float, ticks: int = 4) -> tuple[float, int]:
    """A round axis maximum at or above `top` for whole counts, and how many gridline steps reach it (<= ticks)."""
    raw = max(top / ticks, 1.0)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    steps = max(1, math.ceil(top / step))
    return step * steps, steps


def _y_axis(left: float, top: float, plot_h: float, max_value: float, right: float, steps: int) -> list[str]:
    """Horizontal gridlines with their values at the left edge."""
    out = []
    for k in range(steps + 1):
        y = top + plot_h - plot_h * k / steps
        out.append(f'<line x1="{left}" x2="{right}" y1="{y:.1f}" y2="{y:.1f}" stroke="{GRID}"/>')
        out.append(_text(left - 6, y + 4, fmt(max_value * k / steps), "end", f' fill="{MUTED}"'))
    return out


def timeline_chart(months: Sequence[tuple[str, int, float | None]], label: str) -> str:
    """Images per month as bars (left axis) and the mean quality score as a line (right axis, 0-100)."""
    top = max((n for _, n, _ in months), default=0)
    if top <= 0:
        return ""
    left, top_pad, plot_h = 48, 12, 200
    step = max(8.0, min(48.0, 720 / len(months)))
    plot_w = step * len(months)
    width, height = left + plot_w + 48, top_pad + plot_h + 40
    top, steps = axis_max(top)
    body = _y_axis(left, top_pad, plot_h, top, left + plot_w, steps)
    every = math.ceil(len(months) / max(1, int(plot_w // 56)))
    points: list[list[tuple[float, float, str]]] = [[]]
    for i, (month, n, score) in enumerate(months):
        x, h = left + i * step, plot_h * n / top
        score_text = "no score" if score is None else f"mean score {score:.1f}"
        body.append(
            f"<g><title>{escape(month)}: {n} images, {score_text}</title>"
            f'<rect x="{x + 1:.1f}" y="{top_pad + plot_h - h:.1f}" width="{step - 2:.1f}" height="{h:.1f}" '
            f'fill="{BAR}" opacity="0.75"/></g>'
        )
        if i % every == 0:
            body.append(_text(x + step / 2, top_pad + plot_h + 16, month, "middle", f' fill="{MUTED}"'))
        if score is None:
            points.append([])
        else:
            points[-1].append((x + step / 2, top_pad + plot_h * (1 - score / 100), f"{month}: mean score {score:.1f}"))
    for segment in points:
        if len(segment) > 1:
            coords = " ".join(f"{x:.1f},{y:.1f}" for x, y, _ in segment)
            body.append(f'<polyline points="{coords}" fill="none" stroke="{LINE}" stroke-width="2"/>')
        for x, y, tip in segment:
            body.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{LINE}"><title>{escape(tip)}</title></circle>'
            )
    for score in (0, 50, 100):
        y = top_pad + plot_h * (1 - score / 100)
        body.append(_text(left + plot_w + 6, y + 4, str(score), extra=f' fill="{LINE}"'))
    legend = "bars: images per month (left axis); line: mean quality score 0-100 (right axis)"
    body.append(_text(left, height - 4, legend, extra=f' fill="{MUTED}"'))
    return _svg(width, height, label, body)


def _grid_step(span: float) -> float:
    return next((s for s in (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30) if span / s <= 8), 30)


def _bounds(values: Sequence[float], low: float, high: float, min_span: float) -> tuple[float, float, float]:
    lo, hi = min(values), max(values)
    pad = max((hi - lo) * 0.1, min_span / 2)
    step = _grid_step(hi - lo + 2 * pad)
    lo, hi = math.floor((lo - pad) / step) * step, math.ceil((hi + pad) / step) * step
    return max(low, lo), min(high, hi), step


def scatter_map(points: Sequence[tuple[float, float, int, str]], label: str) -> str:
    """Latitude/longitude on plain equirectangular axes (one degree is as wide as it is tall; no map tiles);
    circle area by count. `points` are (latitude, longitude, count, tooltip)."""
    if not points:
        return ""
    lat0, lat1, lat_step = _bounds([p[0] for p in points], -90, 90, 1.0)
    lon0, lon1, lon_step = _bounds([p[1] for p in points], -180, 180, 2.0)
    scale = min(640 / (lon1 - lon0), 420 / (lat1 - lat0))
    left, top_pad = 56, 10
    plot_w, plot_h = (lon1 - lon0) * scale, (lat1 - lat0) * scale
    width, height = left + plot_w + 28, top_pad + plot_h + 30

    def xy(lat: float, lon: float) -> tuple[float, float]:
        return left + (lon - lon0) * scale, top_pad + (lat1 - lat) * scale

    body = [f'<rect x="{left}" y="{top_pad}" width="{plot_w:.1f}" height="{plot_h:.1f}" fill="#f6f8fa"/>']
    for lon in _ticks(lon0, lon1, lon_step):
        x, _ = xy(lat0, lon)
        body.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top_pad}" y2="{top_pad + plot_h:.1f}" stroke="{GRID}"/>')
        body.append(_text(x, top_pad + plot_h + 16, _degrees(lon, "E", "W"), "middle", f' fill="{MUTED}"'))
    for lat in _ticks(lat0, lat1, lat_step):
        _, y = xy(lat, lon0)
        body.append(f'<line x1="{left}" x2="{left + plot_w:.1f}" y1="{y:.1f}" y2="{y:.1f}" stroke="{GRID}"/>')
        body.append(_text(left - 6, y + 4, _degrees(lat, "N", "S"), "end", f' fill="{MUTED}"'))
    top = max(p[2] for p in points) or 1
    for lat, lon, count, tip in sorted(points, key=lambda p: -p[2]):
        x, y = xy(lat, lon)
        r = 3 + 11 * math.sqrt(max(count, 0) / top)
        body.append(
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{r:.1f}" fill="{BAR}" fill-opacity="0.55" stroke="{BAR}">'
            f"<title>{escape(tip)}</title></circle>"
        )
    return _svg(width, height, label, body)


def _ticks(lo: float, hi: float, step: float) -> list[float]:
    return [round(lo + k * step, 6) for k in range(int(round((hi - lo) / step)) + 1)]


def _degrees(value: float, positive: str, negative: str) -> str:
    text = f"{abs(value):.2f}".rstrip("0").rstrip(".")
    return f"{text}°{positive if 0 < value < 180 else negative if -180 < value < 0 else ''}"

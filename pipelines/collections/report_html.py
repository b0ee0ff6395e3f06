"""The collection report (report.py's JSON document) as one self-contained, offline HTML5 page.

No JavaScript and no URL of any kind: charts are inline SVG drawn here (svg_charts.py), thumbnails are `data:` URIs
given by the caller, and a Content-Security-Policy forbids anything else. Every string from the report (image,
camera and lens names are user-controlled) is escaped. Any list or dict of the report may be empty: that section
then says "none".
"""

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from html import escape
from typing import Any

from pipelines.collections.insights import percent_text
from pipelines.collections.svg_charts import bar_chart, column_chart, fmt, scatter_map, timeline_chart, truncate

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
THUMB_PREFIXES = ("data:image/jpeg;base64,", "data:image/png;base64,", "data:image/webp;base64,")
HEX_COLOUR = re.compile(r"#[0-9a-fA-F]{6}")
MAX_DUPLICATE_GROUPS = 50
THUMBNAILS_PER_GROUP = 8  # a flood of identical frames is one group: its first few stand for it
SECTIONS = (
    ("insights", "Insights"),
    ("quality", "Quality"),
    ("defects", "Per-camera defect rates"),
    ("timeline", "Timeline"),
    ("cameras", "Cameras and lenses"),
    ("files", "Formats, resolutions, orientations, colour modes"),
    ("locations", "Locations"),
    ("colours", "Dominant colours"),
    ("duplicates", "Duplicate groups"),
    ("worst", "Worst images per tag"),
    ("outliers", "Outliers"),
)
STYLE = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1f2328; background: #fff;
  margin: 0 auto; max-width: 1180px; padding: 0 24px 48px; }
header { border-bottom: 2px solid #d5d9e0; padding: 16px 0 8px; }
h1 { font-size: 1.7em; margin: 0 0 8px; overflow-wrap: anywhere; }
h2 { font-size: 1.3em; margin: 32px 0 8px; border-bottom: 1px solid #d5d9e0; padding-bottom: 4px; }
h3 { font-size: 1.05em; margin: 16px 0 4px; }
dl.facts { display: flex; flex-wrap: wrap; gap: 4px 28px; margin: 0; }
dl.facts div { display: flex; gap: 6px; } dl.facts dt { color: #57606a; } dl.facts dd { margin: 0; font-weight: 600; }
nav ul { list-style: none; display: flex; flex-wrap: wrap; gap: 4px 16px; padding: 0; margin: 8px 0 0; }
a { color: #0b5cad; }
figure { margin: 8px 0 16px; } figcaption { color: #57606a; font-size: 0.9em; margin-bottom: 4px; }
svg { max-width: 100%; height: auto; display: block; }
.row { display: flex; flex-wrap: wrap; gap: 8px 32px; align-items: flex-start; }
table { border-collapse: collapse; font-size: 0.9em; margin: 4px 0 12px; }
th, td { border: 1px solid #d5d9e0; padding: 3px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; max-width: 260px; overflow-wrap: anywhere; }
thead th { background: #f6f8fa; }
details summary { cursor: pointer; color: #57606a; font-size: 0.9em; }
.none { color: #57606a; font-style: italic; }
.insights li { margin-bottom: 10px; } .evidence { color: #57606a; font-size: 0.85em; display: block; }
.thumbs { display: flex; flex-wrap: wrap; gap: 10px; margin: 6px 0 14px; }
.thumb { width: 140px; margin: 0; font-size: 0.82em; }
.thumb img, .thumb .placeholder { width: 140px; height: 105px; object-fit: cover; display: block;
  background: #eef1f4; border: 1px solid #d5d9e0; }
.thumb .placeholder { display: flex; align-items: center; justify-content: center; color: #57606a; }
.thumb figcaption { color: #1f2328; overflow-wrap: anywhere; margin: 2px 0 0; }
.swatches { display: flex; flex-wrap: wrap; gap: 10px; list-style: none; padding: 0; }
.swatches li { width: 96px; font-size: 0.85em; } .swatches span { display: block; height: 48px;
  border: 1px solid #8c959f; border-radius: 4px; }
"""


def render_report_html(report: Mapping[str, Any], thumbnails: Mapping[str, str] | None = None) -> str:
    """One HTML5 document for `report` (report.py's schema); `thumbnails` maps image names to `data:` URIs."""
    thumbs = thumbnails or {}
    builders: dict[str, Callable[[], str]] = {
        "insights": lambda: _insights(report.get("insights") or []),
        "quality": lambda: _quality(report.get("quality") or {}),
        "defects": lambda: _defects(report.get("camera_defects") or []),
        "timeline": lambda: _timeline(report.get("per_month") or []),
        "cameras": lambda: _cameras(report.get("cameras") or [], report.get("lenses") or []),
        "files": lambda: _files(report),
        "locations": lambda: _locations(report.get("locations") or [], report.get("geotagged")),
        "colours": lambda: _colours(report.get("dominant_colors") or []),
        "duplicates": lambda: _duplicates(report, thumbs),
        "worst": lambda: _worst(report.get("worst") or {}, thumbs),
        "outliers": lambda: _outliers(report.get("outliers") or [], thumbs),
    }
    sections = "".join(
        f'<section id="{key}"><h2>{escape(title)}</h2>{builders[key]()}</section>' for key, title in SECTIONS
    )
    title = escape(f"Collection report: {report.get('name') or 'unnamed'}")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{title}</title><style>{STYLE}</style></head>\n<body>{_header(report)}<main>{sections}</main>"
        "</body></html>\n"
    )


def _none(what: str = "none") -> str:
    return f'<p class="none">{escape(what)}</p>'


def _figure(chart: str, caption: str, table: str = "") -> str:
    if not chart:
        return f"<figure><figcaption>{escape(caption)}</figcaption>{_none()}</figure>"
    return f"<figure><figcaption>{escape(caption)}</figcaption>{chart}{table}</figure>"


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]], summary: str | None = None) -> str:
    """A small data table; cells are already-escaped HTML. With `summary`, folded in a <details>."""
    head = "".join(f'<th scope="col">{escape(h)}</th>' for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    table = f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    return f"<details><summary>{escape(summary)}</summary>{table}</details>" if summary else table


def _counts_figure(counts: Mapping[str, Any] | Sequence[tuple[str, float]], caption: str, unit: str = "images") -> str:
    items = [(str(k), float(v or 0)) for k, v in (counts.items() if isinstance(counts, Mapping) else counts)]
    return _figure(bar_chart(items, caption, unit), caption)


def camera_label(make: str | None, model: str | None) -> str:
    """'Make Model', the model alone when it already starts with the make, 'unknown camera' when neither is known."""
    make, model = (make or "").strip(), (model or "").strip()
    if make and model.lower().startswith(make.lower().split()[0]):
        return model
    return f"{make} {model}".strip() or "unknown camera"


def _pct(rate: float | None) -> str:
    return "–" if rate is None else percent_text(rate, 1)


def _header(report: Mapping[str, Any]) -> str:
    dates = report.get("date_range") or {}
    first, last = dates.get("first"), dates.get("last")
    date_text = f"{first} to {last}" if first and last else (first or last or "none")
    facts = (
        ("Images", fmt(report.get("images") or 0)),
        ("Failed", fmt(report.get("failed") or 0)),
        ("Dates", date_text),
        ("Generated", report.get("generated_at") or "unknown"),
    )
    dl = "".join(f"<div><dt>{escape(k)}</dt><dd>{escape(str(v))}</dd></div>" for k, v in facts)
    nav = "".join(f'<li><a href="#{key}">{escape(title)}</a></li>' for key, title in SECTIONS)
    name = escape(report.get("name") or "unnamed")
    return (
        f'<header><h1>Collection report: {name}</h1><dl class="facts">{dl}</dl>'
        f'<nav aria-label="Sections"><ul>{nav}</ul></nav></header>'
    )


def _insights(insights: Sequence[Mapping[str, Any]]) -> str:
    if not insights:
        return _none("none: no defect rate differs clearly between groups of images")
    items = []
    for insight in insights:
        e = insight.get("evidence") or {}
        parts = [
            f"{e.get('factor', '?')} = {e.get('group', '?')}, tag {e.get('tag', '?')}",
            f"rate {_pct(e.get('rate'))} of n = {e.get('n', '?')}",
            f"rest {_pct(e.get('rest_rate'))} of n = {e.get('rest_n', '?')}",
        ]
        if e.get("ratio") is not None:
            parts.append(f"ratio {e['ratio']:.2f}×")
        if e.get("p_value") is not None:
            parts.append(f"p = {e['p_value']:.2g}")
        evidence = escape(" · ".join(str(p) for p in parts))
        items.append(f'<li>{escape(str(insight.get("text", "")))}<span class="evidence">{evidence}</span></li>')
    return f'<ul class="insights">{"".join(items)}</ul>'


def _quality(quality: Mapping[str, Any]) -> str:
    bins = quality.get("score_histogram") or []
    hist = [(f"{b.get('from', '?')}-{b.get('to', '?')}", float(b.get("count") or 0)) for b in bins]
    mean = quality.get("mean_score")
    mean_text = f"Mean quality score: {mean:.1f} / 100" if mean is not None else "Mean quality score: none"
    table = _table(("score", "images"), ((escape(k), fmt(v)) for k, v in hist), "histogram as a table") if hist else ""
    return (
        f"<p><strong>{escape(mean_text)}</strong></p><div class='row'>"
        + _counts_figure(quality.get("levels") or {}, "Images per quality level")
        + _counts_figure(quality.get("tags") or {}, "Images per quality tag (defects and praise)")
        + "</div>"
        + _figure(column_chart(hist, "Quality score histogram (0-100)"), "Quality score histogram (0-100)", table)
    )


def _heat(rate: float) -> str:
    lightness = 100 - 45 * max(0.0, min(1.0, rate))
    return f' style="background: hsl(4, 75%, {lightness:.0f}%)"'


def _defects(rows: Sequence[Mapping[str, Any]]) -> str:
    tags = sorted({tag for row in rows for tag in (row.get("tags") or {})})
    if not rows or not tags:
        return _none()
    head = "".join(f'<th scope="col">{escape(tag)}</th>' for tag in tags)
    body = []
    for row in rows:
        rates = row.get("tags") or {}
        name = camera_label(row.get("make"), row.get("model"))
        cells = "".join(f"<td{_heat(rates.get(tag) or 0)}>{_pct(rates.get(tag) or 0)}</td>" for tag in tags)
        body.append(f'<tr><th scope="row">{escape(name)}</th><td>{fmt(row.get("images") or 0)}</td>{cells}</tr>')
    return (
        "<figure><figcaption>Share of each camera's images with the tag (darker = more often)</figcaption>"
        f'<table><thead><tr><th scope="col">camera</th><th scope="col">images</th>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></figure>"
    )


def _timeline(months: Sequence[Mapping[str, Any]]) -> str:
    data = [(str(m.get("month", "?")), int(m.get("images") or 0), m.get("mean_score")) for m in months]
    rows = ((escape(m), fmt(n), "–" if s is None else f"{s:.1f}") for m, n, s in data)
    table = _table(("month", "images", "mean score"), rows, "per month as a table") if data else ""
    return _figure(
        timeline_chart(data, "Images and mean quality score per month"), "Images and mean score per month", table
    )


def _cameras(cameras: Sequence[Mapping[str, Any]], lenses: Sequence[Mapping[str, Any]]) -> str:
    camera_items = [(camera_label(c.get("make"), c.get("model")), float(c.get("count") or 0)) for c in cameras]
    lens_items = [(str(lens.get("lens") or "unknown lens"), float(lens.get("count") or 0)) for lens in lenses]
    return (
        "<div class='row'>"
        + _counts_figure(camera_items, "Images per camera")
        + _counts_figure(lens_items, "Images per lens")
        + "</div>"
    )


def _files(report: Mapping[str, Any]) -> str:
    charts = (
        ("formats", "Images per file format"),
        ("resolutions", "Images per resolution"),
        ("orientations", "Images per orientation"),
        ("color_modes", "Images per colour mode"),
    )
    return "<div class='row'>" + "".join(_counts_figure(report.get(k) or {}, c) for k, c in charts) + "</div>"


def _locations(locations: Sequence[Mapping[str, Any]], geotagged: int | None) -> str:
    points = []
    for place in locations:
        lat, lon = place.get("latitude"), place.get("longitude")
        if lat is None or lon is None:
            continue
        count, names = int(place.get("count") or 0), [str(n) for n in place.get("names") or []]
        tip = f"{lat:.4f}, {lon:.4f}: {count} images" + (f" ({', '.join(names)})" if names else "")
        points.append((float(lat), float(lon), count, tip))
    caption = f"Where the {fmt(geotagged or 0)} geotagged images were taken (latitude/longitude; circle area by count)"
    return _figure(scatter_map(points, "Photo locations by latitude and longitude"), caption)


def _colours(colours: Sequence[Mapping[str, Any]]) -> str:
    if not colours:
        return _none()
    items = []
    for colour in colours:
        hex_ = str(colour.get("hex") or "")
        fill = hex_ if HEX_COLOUR.fullmatch(hex_) else "#888888"
        count = fmt(colour.get("count") or 0)
        items.append(f'<li><span style="background: {fill}"></span>{escape(hex_)}<br>{count} images</li>')
    return f'<ul class="swatches" aria-label="Dominant colours">{"".join(items)}</ul>'


def _thumb(name: str, thumbs: Mapping[str, str], caption: str = "") -> str:
    uri = thumbs.get(name)
    label = escape(name)
    if uri and uri.startswith(THUMB_PREFIXES):
        picture = f'<img src="{escape(uri)}" alt="{label}" width="140" height="105">'
    else:
        picture = f'<div class="placeholder" role="img" aria-label="no preview of {label}">no preview</div>'
    extra = f"<br>{escape(caption)}" if caption else ""
    caption_html = f'<figcaption title="{label}">{escape(truncate(name, 40))}{extra}</figcaption>'
    return f'<figure class="thumb">{picture}{caption_html}</figure>'


def _score(value: float | None) -> str:
    return "score none" if value is None else f"score {value:.3g}"


def _duplicates(report: Mapping[str, Any], thumbs: Mapping[str, str]) -> str:
    out = []
    for key, title in (("duplicates", "Near and exact duplicates"), ("exact_duplicates", "Exact duplicates")):
        groups = report.get(key) or []
        out.append(f"<h3>{escape(title)} ({len(groups)} group{'' if len(groups) == 1 else 's'})</h3>")
        if not groups:
            out.append(_none())
        for group in groups[:MAX_DUPLICATE_GROUPS]:
            shown = "".join(_thumb(str(n), thumbs) for n in group[:THUMBNAILS_PER_GROUP])
            more = f"<p>… and {len(group) - THUMBNAILS_PER_GROUP} more</p>" if len(group) > THUMBNAILS_PER_GROUP else ""
            out.append(f'<div class="thumbs">{shown}{more}</div>')
        if len(groups) > MAX_DUPLICATE_GROUPS:
            out.append(f"<p>… and {len(groups) - MAX_DUPLICATE_GROUPS} more groups.</p>")
    return "".join(out)


def _worst(worst: Mapping[str, Sequence[Mapping[str, Any]]], thumbs: Mapping[str, str]) -> str:
    out = []
    for tag, items in worst.items():
        if items:
            cells = "".join(_thumb(str(i.get("name")), thumbs, _score(i.get("score"))) for i in items)
            out.append(f'<h3>{escape(str(tag))}</h3><div class="thumbs">{cells}</div>')
    return "".join(out) or _none()


def _outliers(outliers: Sequence[Mapping[str, Any]], thumbs: Mapping[str, str]) -> str:
    cells = "".join(
        _thumb(str(o.get("name")), thumbs, f"{o.get('reason') or 'unusual'}; {_score(o.get('score'))}")
        for o in outliers
    )
    return f'<div class="thumbs">{cells}</div>' if cells else _none()

"""The offline HTML collection report: sections, charts, escaping, thumbnails and the empty report."""

import re
from html import escape
from html.parser import HTMLParser

import pytest

from pipelines.collections.report_html import render_report_html
from tests.collection_report_fixture import (
    AMP_NAME,
    EVIL_CAMERA,
    EVIL_NAME,
    EXPECTED_SVGS,
    NO_THUMBNAIL,
    empty_report,
    report,
    thumbnails,
)

pytestmark = pytest.mark.unit

HEADINGS = (
    "Insights",
    "Quality",
    "Per-camera defect rates",
    "Timeline",
    "Cameras and lenses",
    "Formats, resolutions, orientations, colour modes",
    "Locations",
    "Dominant colours",
    "Duplicate groups",
    "Worst images per tag",
    "Outliers",
)


class Tags(HTMLParser):
    """Every start tag with its attributes, and the text of each <h2>."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.h2: list[str] = []
        self._in_h2 = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_h2 = tag == "h2"
        if self._in_h2:
            self.h2.append("")

    def handle_endtag(self, tag: str) -> None:
        self._in_h2 = False if tag == "h2" else self._in_h2

    def handle_data(self, data: str) -> None:
        if self._in_h2:
            self.h2[-1] += data


def parse(html: str) -> Tags:
    parser = Tags()
    parser.feed(html)
    parser.close()
    return parser


@pytest.fixture(scope="module")
def html() -> str:
    return render_report_html(report(), thumbnails())


def test_sections_in_order(html: str) -> None:
    assert parse(html).h2 == list(HEADINGS)
    assert "<h1>Collection report: Holiday &amp; &lt;b&gt;family&lt;/b&gt; photos</h1>" in html
    for fact in ("<dd>120</dd>", "<dd>3</dd>", "2021-01-03T09:12:00 to 2022-06-28T18:40:00", "2024-05-01T12:00:00"):
        assert fact in html


def test_charts_are_labelled_inline_svg(html: str) -> None:
    svgs = [attrs for tag, attrs in parse(html).tags if tag == "svg"]
    assert len(svgs) == EXPECTED_SVGS == html.count("<svg")
    for attrs in svgs:
        assert attrs["role"] == "img" and attrs["aria-label"], attrs
        assert float(attrs["width"] or 0) > 0 and float(attrs["height"] or 0) > 0, attrs


def test_offline_and_no_script(html: str) -> None:
    lowered = html.lower()
    for forbidden in ("http://", "https://", "<script", 'src="//', "javascript:", "<img src=x"):
        assert forbidden not in lowered, forbidden
    assert "content=\"default-src 'none'; img-src data:; style-src 'unsafe-inline'\"" in html
    tags = parse(html).tags
    assert not [t for t, _ in tags if t in ("script", "link", "iframe", "object", "embed", "base")]
    for tag, attrs in tags:
        for key, value in attrs.items():
            assert not key.startswith("on"), (tag, key)
            if key in ("src", "href"):
                assert (value or "").startswith(("data:image/", "#")), (tag, key, value)


def test_user_strings_only_escaped(html: str) -> None:
    for name in (EVIL_NAME, AMP_NAME, EVIL_CAMERA):
        assert escape(name) in html, name
        assert name not in html, name
    assert "&lt;script&gt;" in html


def test_thumbnails_and_placeholders(html: str) -> None:
    thumbs = thumbnails()
    for name, uri in thumbs.items():
        assert f'<img src="{uri}" alt="{escape(name)}"' in html, name
    assert f'aria-label="no preview of {NO_THUMBNAIL}"' in html
    assert NO_THUMBNAIL not in thumbs
    bare = render_report_html(report())
    assert "<img" not in bare
    slots = html.count('class="thumb"')
    assert slots == bare.count('class="placeholder"') > len(thumbs)
    hostile = render_report_html(report(), {"IMG_0300.png": "https://example.com/x.jpg"})
    assert "example.com" not in hostile and 'aria-label="no preview of IMG_0300.png"' in hostile


def test_numbers_and_capping(html: str) -> None:
    assert "p = 0.0012" in html and "rate 35.0 % of n = 40" in html and "ratio 3.50×" in html
    assert "Mean quality score: 58.4 / 100" in html
    assert re.search(r"<td style=\"background: hsl\(4, 75%, \d+%\)\">35\.0 %</td>", html)
    # 25 lenses: 19 bars and one "other" summing the 6 smallest; the long names truncated, in full in the tooltip
    assert "<title>other (6): 51 images</title>" in html
    assert "<title>Lens 0 24-70mm f/2.8 with a long marketing name: 30 images</title>" in html
    assert "Lens 0 24-70mm f/2.8 wi…" in html
    assert "<title>2021-06: 5 images, no score</title>" in html
    assert html.count('<span style="background: #') == 3
    assert "score 0.93" in html and "score 12.5" in html and "score none" in html


def test_empty_report_renders_none() -> None:
    html = render_report_html(empty_report())
    tags = parse(html)
    assert tags.h2 == list(HEADINGS)
    assert "<svg" not in html and "<img" not in html
    assert html.count('class="none"') >= len(HEADINGS)
    assert "Collection report: unnamed" in html and "Mean quality score: none" in html


def test_missing_keys_render() -> None:
    html = render_report_html({"name": "bare", "images": 0})
    assert parse(html).h2 == list(HEADINGS) and "<svg" not in html

"""A PNG of the first screen of an HTML collection report, from headless Chromium.

python -m tooling.collections.report_screenshot REPORT_HTML OUT_PNG [--width 1280 --height 900]
"""

import argparse
import sys
from pathlib import Path

from tooling.collections.browser import missing_browser, screenshot


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("report_html", type=Path)
    parser.add_argument("out_png", type=Path)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=900)
    args = parser.parse_args(argv)
    if not args.report_html.is_file():
        parser.error(f"{args.report_html} is not a file")
    reason = missing_browser()
    if reason:
        print(f"cannot take a screenshot: {reason}", file=sys.stderr)
        return 2
    out = screenshot(args.report_html, args.out_png, args.width, args.height)
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Text from uploads, safe where it is shown: CSV cells a spreadsheet will not run, lines a terminal will not obey.

File names, archive member names, EXIF fields, model labels and error messages that echo them are the uploader's
(or whoever trained the model): a cell starting like a formula (`=HYPERLINK(...)`, `@SUM(...)`) would be run by
Excel, LibreOffice or Sheets when a user opens the export. Such text gets a leading apostrophe (OWASP's advice for
CSV injection); numbers are left alone. Every CSV the server or the CLI writes goes through `safe_cell`.
"""

import unicodedata

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: object) -> object:
    """`value` for a CSV cell: None as empty, text starting like a formula with a leading apostrophe."""
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def terminal_text(text: str) -> str:
    """`text` to print on a terminal: control and format characters (ESC, BEL, newlines, C1, bidi overrides) as
    `\\x..` escapes, so text that photos or uploaders supply (a camera's Make, a file name, a label) cannot run
    escape sequences or split a table row."""
    return "".join(ascii(c)[1:-1] if unicodedata.category(c) in ("Cc", "Cf") else c for c in text)

"""CSV cells a spreadsheet will not run.

File names, archive member names, EXIF fields, model labels and error messages that echo them are the uploader's
(or whoever trained the model): a cell starting like a formula (`=HYPERLINK(...)`, `@SUM(...)`) would be run by
Excel, LibreOffice or Sheets when a user opens the export. Such text gets a leading apostrophe (OWASP's advice for
CSV injection); numbers are left alone. Every CSV the server or the CLI writes goes through `safe_cell`.
"""

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: object) -> object:
    """`value` for a CSV cell: None as empty, text starting like a formula with a leading apostrophe."""
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value

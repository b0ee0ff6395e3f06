"""Collection-level analysis as pure functions over per-image records: summaries, duplicates, outliers, insights
and the report (docs/COLLECTIONS.md)."""

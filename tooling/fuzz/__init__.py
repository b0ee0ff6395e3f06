"""Fuzzing campaigns (#18): coverage-guided targets over the real parsers, and API fuzzing of a real server."""

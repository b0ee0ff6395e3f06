"""A quality score learned from human ratings (issue #15 item 2): deep features of the served classifier, pooled
at several depths, and a ridge regression onto BIQ2021 mean opinion scores. See `train` and docs/QUALITY.md."""

"""Tooling that is not served: training, evaluation, calibration, data generation."""

"""Quality tooling: threshold calibration and evaluation on labelled photos, synthetic distortion generation."""

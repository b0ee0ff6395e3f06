"""quality_net: the project's own learned quality/anomaly model and the scripts that train and evaluate it."""

"""Data builders and evaluation for training jobs (serving.training): not served."""

"""Training jobs: a labelled image dataset -> features from the served backbone -> a softmax head -> a new model
version in the trained-models folder, served without a restart (docs/TRAINING.md)."""

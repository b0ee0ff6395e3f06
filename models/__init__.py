"""Model repository tooling: folders with config.yaml are models; some also hold their training code."""

"""quality_net tooling: the scripts that train and evaluate the learned model whose folder is models/quality_net/."""

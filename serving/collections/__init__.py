"""Collections: whole image collections analysed on Ray Data, stored as datasets, summarised and reported."""

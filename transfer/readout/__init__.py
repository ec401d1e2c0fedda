"""Frozen readouts of a backbone without detection training: the dense linear probe, dense retrieval, their
BN re-estimation, the tile bootstrap, the budget curve and the matching-seed study."""

"""The transfer side of ``tools/benchmark.py``: the pre-iteration checks on a large set and dense
retrieval's throughput."""

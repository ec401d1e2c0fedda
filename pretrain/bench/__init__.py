"""The pretraining side of ``tools/benchmark.py``: interleaved timing, the data pipeline, the step and the
matchers, the cost of portable numerics."""

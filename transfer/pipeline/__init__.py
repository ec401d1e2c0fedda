"""Pipelines of tool runs: the demo and the study (plan, stages, report), the prepared GPU check and
submitit jobs."""

"""tools/benchmark.py numerics: the fast and portable workers in turn, a second portable worker that must end with
the same weights, and candidates for a cheaper portable mode, each said to keep portable's bits or not."""
import json

import pytest


@pytest.mark.slow
def test_candidates_are_timed_beside_the_modes_and_their_bits_compared_with_portable(tmp_path, run_tool):
    out = tmp_path / "numerics.json"
    result = run_tool("benchmark", "numerics", "--depth", 18, "--size", 64, "--batch", 2, "--warmup", 1,
                      "--repeats", 2, "--device", "cpu", "--candidates", "channels_last", "mkl_avx2_strict",
                      "--json", out)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(out.read_text())
    assert set(report["numerics"]) == {"fast", "portable", "channels_last", "mkl_avx2_strict"}
    assert all(t["n"] == 2 for t in report["numerics"].values()) and report["repeat_identical"]
    assert set(report["ratios"]) == {"portable/fast", "channels_last/fast", "mkl_avx2_strict/fast"}
    assert report["threads"]["channels_last"] == report["threads"]["portable"] == 2
    # channels-last tensors take another im2col and GEMM layout: other sums, other bits.
    assert not report["candidates"]["channels_last"]["same_bits_as_portable"]
    assert "channels_last/fast: " in result.stdout and "other weights than portable" in result.stdout


def test_an_unknown_candidate_is_refused(run_tool):
    refused = run_tool("benchmark", "numerics", "--candidates", "nope")
    assert refused.returncode == 2 and "nope" in refused.stderr

"""``tools/benchmark.py checks``: the files it writes are the set the checks accept, and it reports what it timed."""
import json

from transfer.bench.checks import write_files
from transfer.data.checks import check_image_files, header_size


def test_the_written_set_has_the_sizes_its_records_say(tmp_path):
    records = write_files(str(tmp_path), 70)
    assert len({r["file_name"] for r in records}) == 70
    assert len({(r["width"], r["height"]) for r in records}) > 10  # several sizes, as a real set
    assert all(header_size(r["file_name"]) == (r["width"], r["height"]) for r in records)
    check_image_files("written", records)  # the benchmark times a check that passes


def test_the_benchmark_reports_the_check_against_decoding(tmp_path, run_tool):
    result = run_tool("benchmark", "checks", "--entries", 40, "--repeats", 2, "--decode-sample", 10,
                      "--scratch", tmp_path, "--json", tmp_path / "checks.json")
    assert result.returncode == 0, result.stderr
    assert "40 images checked" in result.stdout
    checks = json.loads((tmp_path / "checks.json").read_text())["checks"]
    assert checks["entries"] == 40 and checks["check_spread_s"][0] <= checks["check_s"] <= checks["check_spread_s"][1]
    assert abs(checks["entries_per_s"] * checks["check_s"] - 40) < 1e-6
    assert list(tmp_path.iterdir()) == [tmp_path / "checks.json"]  # its scratch files are gone

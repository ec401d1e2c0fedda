"""The prepared GPU check (``tools/gpu_check.sh``): its steps as commands, running them with a time limit each, and
the report (one JSON, one table). ``smoke`` runs the same steps, shrunk, on the CPU."""
import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

from pretrain.matchers import list_matchers
from pretrain.runtime.files import atomic_write_json, read_jsonl
from transfer.data.synthetic import write_images, write_voc

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOLS = os.path.join(ROOT, "tools")


def steps(smoke: bool, out: str, data: str):
    """(name, command, timeout in seconds, JSON the command writes or None)."""
    python = sys.executable
    if smoke:
        step = ["--depth", "18", "--size", "64", "--batch", "2", "--device", "cpu", "--warmup", "1", "--repeats", "2"]
        match = ["--grids", "7", "--match-batch", "2", "--channels", "64", "--device", "cpu", "--match-repeats", "2"]
        detectron = ["MODEL.DEVICE", "cpu", "SOLVER.MAX_ITER", "2"]
        views = ["--size", "64", "--workers", "0", "--data-batch", "4", "--data-repeats", "1", "--data-epochs", "1"]
        modes = step
    else:
        step = ["--depth", "50", "--size", "224", "--batch", "64", "--amp", "--device", "cuda", "--warmup", "5",
                "--repeats", "20", "--max-batch"]
        match = ["--grids", "28", "--match-batch", "32", "--device", "cuda", "--match-repeats", "20"]
        detectron = ["MODEL.DEVICE", "cuda", "SOLVER.MAX_ITER", "20", "SOLVER.IMS_PER_BATCH", "4"]
        views = ["--size", "224", "--workers", "0", "--data-batch", "64", "--data-repeats", "5", "--data-epochs", "1"]
        # the portable mode's deterministic settings against fast, and whether two processes agree to the bit
        modes = ["--depth", "50", "--size", "224", "--batch", "32", "--device", "cuda", "--warmup", "3", "--repeats",
                 "10"]
    return [
        ("gpu_tests", [python, "-m", "pytest", "-q", "-m", "gpu", "tests", "--junitxml", f"{out}/gpu_tests.xml"],
         240, None),
        ("step_benchmark", [python, f"{TOOLS}/benchmark.py", "step", *step, "--json", f"{out}/step.json"], 240,
         f"{out}/step.json"),
        ("numerics", [python, f"{TOOLS}/benchmark.py", "numerics", *modes, "--json", f"{out}/numerics.json"], 240,
         f"{out}/numerics.json"),
        ("matchers", [python, f"{TOOLS}/benchmark.py", "match", *match, "--json", f"{out}/match.json"], 120,
         f"{out}/match.json"),
        ("view_pipelines", [python, f"{TOOLS}/benchmark.py", "data", "--images", f"{data}/images", *views, "--json",
                            f"{out}/data.json"], 180, f"{out}/data.json"),
        ("faster_rcnn_c4", [python, f"{TOOLS}/train_net.py", "--config-file",
                            f"{ROOT}/configs/transfer/tiny/voc_R_50_C4_cpu.yaml", "--num-gpus", "1", *detectron,
                            "SEED", "0", "OUTPUT_DIR", f"{out}/faster_rcnn_c4"], 240,
         f"{out}/faster_rcnn_c4/final_results.json"),
    ], {"DETECTRON2_DATASETS": data}


def pytest_counts(xml_path: str) -> dict:
    if not os.path.exists(xml_path):
        return {}
    suite = ET.parse(xml_path).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    return {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}


def detectron_rate(folder: str):
    """Seconds per iteration over the iterations Detectron2 logged (metrics.json, one JSON per line)."""
    times = [row["time"] for row in read_jsonl(os.path.join(folder, "metrics.json")) if "time" in row]
    return sum(times) / len(times) if times else None


def run_check(smoke: bool, out: str, device_name: str) -> dict:
    """Every step in turn, each with its time limit; the report (also written to OUT/result.json)."""
    import torch
    os.makedirs(out, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gpu_check_voc_") as data:  # synthetic VOC: nothing from the network
        write_voc(data, classes=("person", "car", "dog"), train=8, test=4, size=(256, 192))
        write_images(os.path.join(data, "images"), count=64, scale=5)  # ~400 x 450 px, for the view pipelines
        report = {"device": device_name, "torch": torch.__version__, "cpu_smoke": smoke,
                  "steps": run_steps(*steps(smoke, out, data))}
    report["steps"]["gpu_tests"]["counts"] = pytest_counts(f"{out}/gpu_tests.xml")
    report["steps"]["faster_rcnn_c4"]["seconds_per_iter"] = detectron_rate(f"{out}/faster_rcnn_c4")
    atomic_write_json(os.path.join(out, "result.json"), report)
    return report


def run_steps(plan, env) -> dict:
    """Each step of the plan in turn, with its time limit: status, seconds, and the JSON it wrote."""
    done_steps = {}
    for name, command, timeout, written in plan:
        start = time.time()
        try:
            done = subprocess.run(command, cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True,
                                  timeout=timeout)
            status = "ok" if done.returncode == 0 else "failed"
            tail = (done.stdout + done.stderr)[-1500:]
        except subprocess.TimeoutExpired:
            status, tail = "timeout", ""
        entry = {"status": status, "seconds": round(time.time() - start, 1)}
        if status != "ok":
            entry["output_tail"] = tail
        if written and os.path.exists(written):
            with open(written) as f:
                entry["result"] = json.load(f)
        done_steps[name] = entry
    return done_steps


def print_table(report):
    steps = report["steps"]
    print("| step | status | seconds | numbers |\n|---|---|---|---|")
    counts = steps["gpu_tests"].get("counts", {})
    print(f"| gpu tests | {steps['gpu_tests']['status']} | {steps['gpu_tests']['seconds']} | {counts} |")
    step = steps["step_benchmark"].get("result", {})
    ips = ", ".join(f"{k} {v:.0f}" for k, v in step.get("images_per_s", {}).items())
    ratios = ", ".join(f"{k} {v:.3f}" for k, v in step.get("ratios", {}).items())
    print(f"| step benchmark | {steps['step_benchmark']['status']} | {steps['step_benchmark']['seconds']} | "
          f"images/s: {ips}; {ratios}; largest batch {step.get('largest_batch')} |")
    modes = steps["numerics"].get("result", {})
    print(f"| numerics modes | {steps['numerics']['status']} | {steps['numerics']['seconds']} | "
          f"portable/fast {modes.get('ratios', {}).get('portable/fast', float('nan')):.3f}; two portable processes "
          f"bit-identical: {modes.get('repeat_identical')} |")
    match = steps["matchers"].get("result", {}).get("match", {})
    cells = "; ".join(f"grid {g}: " + ", ".join(f"{m} {row[m]['seconds'] * 1e3:.2f} ms"
                                                for m in list_matchers(from_geometry=False))
                      for g, row in match.items())
    print(f"| matchers | {steps['matchers']['status']} | {steps['matchers']['seconds']} | {cells} |")
    views = steps["view_pipelines"].get("result", {})
    device_side = {k: v["seconds_per_image"] for k, v in views.get("device_side", {}).items()}
    share = ""
    if "cuda" in device_side and step.get("images_per_s"):  # against one image's share of a ResNet-50 step
        per_image = 1 / max(step["images_per_s"].values())
        share = f"; {100 * device_side['cuda'] / per_image:.1f}% of a step's time per image"
    print(f"| view pipelines | {steps['view_pipelines']['status']} | {steps['view_pipelines']['seconds']} | "
          "device side: " + ", ".join(f"{k} {1e3 * v:.2f} ms/image" for k, v in device_side.items()) + share + " |")
    rate = steps["faster_rcnn_c4"].get("seconds_per_iter")
    print(f"| Faster R-CNN R50-C4 | {steps['faster_rcnn_c4']['status']} | {steps['faster_rcnn_c4']['seconds']} | "
          f"{'-' if rate is None else f'{rate:.3f} s/iter'} |")

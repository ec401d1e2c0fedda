#!/usr/bin/env python
"""Collect fine-tuning results into one table: mean, std and n per pretrained model.

    tools/collect_results.py output/voc/random_init output/voc/houghcl --out output/voc/table

Each RUN_DIR is one pretrained model: its ``seed_*/final_results.json`` (or its own final_results.json) are the
seeds. VOC runs give bbox AP/AP50/AP75; COCO runs give bbox and segm AP/AP50/AP75. Writes OUT.md and OUT.csv.
"""
import argparse
import csv
import glob
import io
import json
import math
import os
import sys

METRICS = ("AP", "AP50", "AP75")


def load_runs(run_dir):
    paths = sorted(glob.glob(os.path.join(run_dir, "seed_*", "final_results.json")))
    if not paths and os.path.exists(os.path.join(run_dir, "final_results.json")):
        paths = [os.path.join(run_dir, "final_results.json")]
    if not paths:
        raise FileNotFoundError(f"{run_dir}: no final_results.json (in seed_*/ or the folder itself)")
    runs = []
    for path in paths:
        try:
            with open(path) as f:
                results = json.load(f)["results"]
        except (json.JSONDecodeError, KeyError) as e:
            raise ValueError(f"{path}: not a train_net results file ({e})") from None
        # One dataset per run: flatten {dataset: {task: {metric: value}}} or {task: {metric: value}}.
        if results and all(isinstance(v, dict) and set(v) <= {"bbox", "segm"} for v in results.values()):
            results = next(iter(results.values()))
        runs.append(results)
    return runs


def mean_std(values):
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, std, n


def summarise(run_dirs, names=None):
    rows = []
    for i, run_dir in enumerate(run_dirs):
        runs = load_runs(run_dir)
        row = {"model": names[i] if names else os.path.basename(os.path.normpath(run_dir)), "n": len(runs)}
        for task in ("bbox", "segm"):
            if not all(task in r for r in runs):
                continue
            for metric in METRICS:
                values = [float(r[task][metric]) for r in runs if metric in r[task]]
                if values:
                    mean, std, _ = mean_std(values)
                    row[f"{task}/{metric}"] = (mean, std)
        rows.append(row)
    return rows


def columns_of(rows):
    columns = []
    for row in rows:
        columns += [k for k in row if "/" in k and k not in columns]
    return columns


def to_markdown(rows):
    columns = columns_of(rows)
    lines = ["| model | n | " + " | ".join(columns) + " |", "|---|---|" + "---|" * len(columns)]
    for row in rows:
        cells = [f"{row[c][0]:.2f} ± {row[c][1]:.2f}" if c in row else "-" for c in columns]
        lines.append(f"| {row['model']} | {row['n']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def to_csv(rows):
    columns = columns_of(rows)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["model", "n"] + [f"{c} {s}" for c in columns for s in ("mean", "std")])
    for row in rows:
        writer.writerow([row["model"], row["n"]] + [f"{row[c][i]:.4f}" if c in row else "" for c in columns
                                                    for i in (0, 1)])
    return out.getvalue()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    parser.add_argument("--names", nargs="+", help="row names (default: the folder names)")
    parser.add_argument("--out", help="write OUT.md and OUT.csv")
    args = parser.parse_args(argv)
    if args.names and len(args.names) != len(args.run_dirs):
        parser.error("--names needs one name per RUN_DIR")
    try:
        rows = summarise(args.run_dirs, args.names)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    markdown = to_markdown(rows)
    print(markdown, end="")
    if args.out:
        import _bootstrap  # noqa: F401

        from pretrain.checkpoint import atomic_write
        atomic_write(args.out + ".md", lambda f: f.write(markdown.encode()))
        atomic_write(args.out + ".csv", lambda f: f.write(to_csv(rows).encode()))
        print(f"wrote {args.out}.md and {args.out}.csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())

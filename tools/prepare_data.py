#!/usr/bin/env python
"""Turn the downloaded archives of a benchmark into the layout Detectron2 and configs/transfer/ read, and check it.

    tools/prepare_data.py prepare voc_detection VOCtrainval_06-Nov-2007.tar VOCtest_06-Nov-2007.tar \\
        VOCtrainval_11-May-2012.tar --root $DETECTRON2_DATASETS
    tools/prepare_data.py check voc_detection --root $DETECTRON2_DATASETS

``prepare`` is idempotent (files already there are kept; a cut-off run is finished by running it again) and writes
every file atomically; it ends with ``check``, which counts what is there against the published numbers and names
in one line what is missing or malformed (exit 1). ``list`` names the datasets and the archives each needs.
"""
import _env  # noqa: F401  isort: skip  (first: outside the environment, one line on how to enter it)
import argparse
import os
import sys

from transfer.data.prepare import DATASETS, PrepareError, check_dataset, os_problem, prepare_dataset


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("action", choices=("prepare", "check", "list"))
    parser.add_argument("name", nargs="?", choices=list(DATASETS), metavar="NAME",
                        help=f"one of {', '.join(DATASETS)}")
    parser.add_argument("archives", nargs="*", metavar="ARCHIVE", help="prepare: the downloaded files")
    parser.add_argument("--root", default=os.getenv("DETECTRON2_DATASETS", "datasets"),
                        help="where Detectron2 looks for its datasets (default: $DETECTRON2_DATASETS, else datasets)")
    args = parser.parse_args(argv)
    if args.action == "list":
        for name, dataset in DATASETS.items():
            print(f"{name}: {dataset.description}\n    archives: {' '.join(dataset.archives)}")
        return 0
    if args.name is None:
        parser.error(f"{args.action} needs a dataset NAME: {', '.join(DATASETS)}")
    dataset = DATASETS[args.name]
    try:
        if args.action == "prepare":
            removed = prepare_dataset(args.name, args.archives, args.root)
            if removed:
                print(f"removed {len(removed)} unfinished temporary files of an interrupted run, e.g. {removed[0]}")
        problems = check_dataset(args.name, args.root)
    except PrepareError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # the root itself: read-only, below a file, a full disk
        print(f"error: {os_problem(e, args.root)}", file=sys.stderr)
        return 1
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        print(f"error: {args.name} under {args.root} is incomplete: {problems[0]}{more}", file=sys.stderr)
        return 1
    counts = ", ".join(f"{k} {v:,}" for k, v in dataset.counts.items())
    print(f"{args.name} under {args.root}: complete ({counts})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

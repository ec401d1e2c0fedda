#!/usr/bin/env python
"""Collect fine-tuning results into tables: mean and std over seeds per model, and paired comparisons.

    tools/collect_results.py output/voc/random_init output/voc/houghcl --baseline random_init --out output/voc/table

Each RUN_DIR is one pretrained model: its ``seed_*/final_results.json`` (or its own final_results.json) are the
seeds. With ``--baseline NAME``, every other model is compared with it over the seeds both share: per-seed
differences, their mean, a 95% Student-t confidence interval and a verdict. Writes OUT.md, OUT.csv, OUT.json.
With ``--tile-bootstrap DRAWS``, every dense-probe comparison's spread is split into the test tiles' part (the
tiles resampled DRAWS times, transfer/readout/tile_bootstrap.py) and the rest.
"""
import _env  # noqa: F401  isort: skip  (first: outside the environment, one line on how to enter it)
import argparse
import sys

from pretrain.runtime.files import atomic_write_text
from transfer.readout import tile_bootstrap
from transfer.results import ResultsError, compare, comparisons_to_markdown, summarise, to_csv, to_json, to_markdown


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    parser.add_argument("--names", nargs="+", help="row names (default: the folder names)")
    parser.add_argument("--baseline", action="append", default=[], metavar="NAME",
                        help="compare every other model with this one, paired by seed (repeatable; a later "
                             "baseline is compared with the earlier ones)")
    parser.add_argument("--tile-bootstrap", type=int, default=0, metavar="DRAWS",
                        help="split the spread of every dense-probe comparison into the test tiles' part and the "
                             "rest (resampling the tiles DRAWS times; needs the probes' test_scores.pt)")
    parser.add_argument("--out", help="write OUT.md, OUT.csv and OUT.json")
    args = parser.parse_args(argv)
    if args.names and len(args.names) != len(args.run_dirs):
        parser.error("--names needs one name per RUN_DIR")
    try:
        rows = summarise(args.run_dirs, args.names)
        # Each model against each baseline; a baseline against the baselines named before it only (with
        # --baseline random_init --baseline densecl: DenseCL against random init, not the reverse as well).
        comparisons = [c for i, name in enumerate(args.baseline)
                       for c in compare(rows, name, skip=args.baseline[:i + 1])]
        folders = {row["model"]: run_dir for row, run_dir in zip(rows, args.run_dirs)}
        noise = tile_bootstrap.decompositions(comparisons, folders, args.tile_bootstrap) if args.tile_bootstrap else []
    except (FileNotFoundError, ResultsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    markdown = to_markdown(rows)
    if comparisons:
        markdown += "\nPaired by seed (model - baseline):\n\n" + comparisons_to_markdown(comparisons)
    paired_models = {(c["model"], c["baseline"]) for c in comparisons}
    for i, baseline in enumerate(args.baseline):
        for row in rows:
            if row["model"] not in args.baseline[:i + 1] and (row["model"], baseline) not in paired_models:
                theirs = next(r["seeds"] for r in rows if r["model"] == baseline)
                why = (f"shares no seed with {baseline} (seeds {row['seeds']} against {theirs})"
                       if not set(row["seeds"]) & set(theirs) else f"has no metric in common with {baseline}")
                markdown += f"\n{row['model']} {why}: not compared.\n"
    if noise:
        markdown += ("\nWhere the spread of the differences comes from (the test tiles resampled, the same draw for "
                     "both models of a seed):\n\n" + tile_bootstrap.to_markdown(noise, args.tile_bootstrap))
    print(markdown, end="")
    if args.out:
        atomic_write_text(args.out + ".md", markdown)
        atomic_write_text(args.out + ".csv", to_csv(rows, comparisons))
        atomic_write_text(args.out + ".json", to_json(rows, comparisons, noise))
        print(f"wrote {args.out}.md, {args.out}.csv and {args.out}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The release step: a converted backbone under a content-addressed name, with the model card that describes it.

``NAME-<sha8>.pkl`` (the first 8 hex digits of the file's sha256, as Detectron2's model zoo and PixPro name
their files) lets anyone check that the file they downloaded is the one a table was computed with. The card
says where the weights come from (the source checkpoint and its hash), how they were trained (the pretraining
``config.yaml``), what the converter did (the sidecar) and what they give (the fine-tuning tables).
"""
import json
import os
import re
import shutil
import zipfile
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import yaml

from pretrain.runtime.files import atomic_write, atomic_write_json, atomic_write_text, sha256_of
from transfer.results import read_results, summarise, tasks_of, to_markdown
from transfer.weights import WeightsError, read_sidecar

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


# What a results folder measured, by its task (Detectron2's tasks are fine-tuning).
READOUTS = {"dense": "Dense linear probe (frozen backbone)", "retrieval": "Dense retrieval (frozen backbone, no "
            "training)"}


def checkpoint_recipe(source: str) -> Optional[Tuple[str, int]]:
    """``(config, iteration)`` that a pretraining checkpoint (``model_*.pth``) records of itself; None for other
    files. A run may change its config on resume (``--allow-config-change``): the checkpoint's own is the one that
    trained it, not the run's final ``config.yaml``."""
    if not source.endswith(".pth") or not os.path.isfile(source):
        return None
    try:
        state = torch.load(source, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(source))
    except Exception:  # another project's file, pickled objects: not a checkpoint of this toolkit
        return None
    if isinstance(state, dict) and isinstance(state.get("cfg"), str) and "iteration" in state:
        return state["cfg"], int(state["iteration"])
    return None


def recipe_of(sidecar: Dict, recipe: Optional[str]) -> Optional[Tuple[str, str]]:
    """``(where it comes from, the pretraining config's text)``: the file given, else the config the source
    checkpoint records of itself, else ``config.yaml`` beside the source (where ``tools/pretrain_net.py`` writes
    it next to ``backbone.pth``), else None."""
    source = sidecar.get("source", "")
    if recipe is None:
        own = checkpoint_recipe(source)
        if own is not None:
            return f"the config `{source}` records of itself, at iteration {own[1]}", own[0]
        beside = os.path.join(os.path.dirname(source), "config.yaml")
        recipe = beside if os.path.exists(beside) else None
    if recipe is None:
        return None
    try:
        with open(recipe) as f:
            text = f.read()
        yaml.safe_load(text)
    except (OSError, yaml.YAMLError) as e:
        raise WeightsError(f"--recipe {recipe}: not a readable YAML config ({e})") from None
    return f"`{recipe}`", text


def model_card(name: str, file_name: str, digest: str, sidecar: Dict, recipe: Optional[Tuple[str, str]],
               results: Sequence[str]) -> str:
    lines = [f"# {name}", "", f"- file: `{file_name}`", f"- sha256: `{digest}`",
             f"- architecture: ResNet-{sidecar['depth']}, groups {sidecar['groups']}, width per group "
             f"{sidecar['width_per_group']}",
             f"- source checkpoint: `{sidecar['source']}` (sha256 `{sidecar['source_sha256']}`), layout "
             f"{sidecar['layout']}, prefix `{sidecar['prefix']}`, encoder {sidecar['encoder']}",
             "- checked in Detectron2 (`tools/convert.py --verify`): " + {True: "yes", False: "no"}.get(
                 sidecar.get("verified"), "not recorded"),
             "", "## Use", "", "Fine-tune with these Detectron2 settings (checked by `tools/train_net.py` from the "
             "sidecar `" + file_name + ".json`):", "", "```"]
    settings = {**sidecar["input_settings"], **sidecar["architecture_settings"]}
    lines += [f"{k} {v}" for k, v in settings.items()] + ["```", "", "## Recipe", ""]
    if recipe:
        lines += [f"Pretraining config ({recipe[0]}):", "", "```yaml", recipe[1].rstrip(), "```"]
    else:
        lines.append("Not recorded: the source is not a pretraining run of this toolkit and no `--recipe` was given.")
    lines += ["", "## Results", ""]
    if results:
        rows = summarise(results)
        for row, run_dir in zip(rows, results):
            kind = READOUTS.get(tasks_of(row["runs"])[0], "Fine-tuning") if row["runs"] else "Fine-tuning"
            lines += [f"{kind} (`{run_dir}`), mean ± sample std over seeds (`tools/collect_results.py`):", "",
                      to_markdown([row]).rstrip(), ""]
    else:
        lines.append("None given.")
    lines += ["", "## Conversion record", "", "```json", json.dumps(sidecar, indent=2), "```", ""]
    return "\n".join(lines)


def same_file(path: str, other: str, digest: str) -> bool:
    """``path`` is ``other``, or a file with ``other``'s sha256 ``digest`` (a copy, a moved file)."""
    if not path:
        return False
    if os.path.exists(path) and os.path.exists(other) and os.path.samefile(path, other):
        return True
    return os.path.isfile(path) and sha256_of(path) == digest


def check_results_are_of(run_dir: str, weights: str, digest: str, sidecar: Dict) -> None:
    """Every run of ``run_dir`` was trained from these weights: the ``.pkl`` (fine-tuning) or the checkpoint it
    was converted from (the dense probe and retrieval read that)."""
    for seed, data in read_results(run_dir).items():
        named = data.get("weights") or ""
        recorded = data.get("weights_sha256")  # fine-tuning records the bytes it started from
        if recorded is not None:
            if recorded not in (digest, sidecar["source_sha256"]):
                raise WeightsError(f"{run_dir}: seed {seed} was trained from {named!r} with sha256 {recorded[:12]}, "
                                   f"not {weights} ({digest[:12]}): the file at that path was replaced since; attach "
                                   "the results of these weights only")
            continue
        parts = named.split(" + ")  # the dense probe's mean of several checkpoints
        if not all(same_file(p, weights, digest) or same_file(p, sidecar["source"], sidecar["source_sha256"])
                   for p in parts):
            raise WeightsError(f"{run_dir}: seed {seed} was trained from {named!r}, not from {weights} nor the "
                               f"checkpoint it was converted from ({sidecar['source']}); attach the results of "
                               "these weights only")


def publish(weights: str, name: str, out_dir: str, recipe: Optional[str] = None,
            results: Sequence[str] = ()) -> List[str]:
    """Copy a converted ``.pkl`` (with its sidecar) to ``out_dir/NAME-<sha8>.pkl`` and write the card
    ``NAME-<sha8>.md``. Returns the written paths. Checks everything before writing anything."""
    if not NAME_PATTERN.match(name):
        raise WeightsError(f"--name {name!r}: use letters, digits and . _ + - only")
    if not weights.endswith(".pkl"):
        raise WeightsError(f"{weights}: publish a converted Detectron2 .pkl (tools/convert.py writes one)")
    if not os.path.isfile(weights):
        raise WeightsError(f"{weights}: no such file")
    sidecar = read_sidecar(weights)
    if sidecar is None or sidecar.get("format") != "detectron2":
        raise WeightsError(f"{weights}: no converter sidecar {weights}.json; convert with tools/convert.py first")
    recipe = recipe_of(sidecar, recipe)
    summarise(results)  # a missing or unreadable results folder fails here, before any file is written
    digest = sha256_of(weights)
    for run_dir in results:
        check_results_are_of(run_dir, weights, digest, sidecar)
    stem = os.path.join(out_dir, f"{name}-{digest[:8]}")
    card = model_card(name, os.path.basename(stem) + ".pkl", digest, sidecar, recipe, results)

    def copy(f):
        with open(weights, "rb") as source:
            shutil.copyfileobj(source, f)

    atomic_write(stem + ".pkl", copy)
    atomic_write_json(stem + ".pkl.json", sidecar)
    atomic_write_text(stem + ".md", card)
    return [stem + ".pkl", stem + ".pkl.json", stem + ".md"]

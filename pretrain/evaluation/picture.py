"""The correspondence picture of ``tools/visualize_matches.py``: every appearance-based matcher's positives on the
view pairs where the matchers disagree most, coloured by the views' true geometry."""
from typing import Dict, List

import torch
from PIL import Image, ImageDraw

from pretrain.backbone import IMAGENET_MEAN, IMAGENET_STD, build_resnet, resnet_stages
from pretrain.config import load_config
from pretrain.data.geometry import matching_hits, true_partners
from pretrain.evaluation.accuracy import pick_all, registered_variants, view_pairs
from pretrain.matchers import MATCHERS, list_matchers

GAP, LABEL = 8, 18


def to_image(view, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    x = view * torch.tensor(std).view(3, 1, 1) + torch.tensor(mean).view(3, 1, 1)
    return Image.fromarray((x.clamp(0, 1).permute(1, 2, 0).numpy() * 255).astype("uint8"))


def cell_centre(index, grid, size, x_offset, y_offset):
    h, w = grid
    return (x_offset + (index % w + 0.5) * size / w, y_offset + (index // w + 0.5) * size / h)


def colour(pick, truth, width):
    d = max(abs(pick // width - truth // width), abs(pick % width - truth % width))
    return (40, 200, 60) if d == 0 else (240, 160, 30) if d == 1 else (230, 40, 40)


def draw(pairs, grid_q, grid_k, size, caption):
    """``pairs``: [(view_q, view_k, truth [Lq], [(label, picks [Lq])])]. Returns the picture."""
    rows = sum(len(p[3]) for p in pairs)
    lines = caption.split("\n")
    canvas = Image.new("RGB", (2 * size + GAP, rows * (size + LABEL) + LABEL * len(lines)), "white")
    pen = ImageDraw.Draw(canvas)
    for k, line in enumerate(lines):
        pen.text((4, 3 + k * LABEL), line, fill="black")
    y = LABEL * len(lines)
    for view_q, view_k, truth, matchers in pairs:
        for label, picks in matchers:
            y += LABEL
            canvas.paste(to_image(view_q), (0, y))
            canvas.paste(to_image(view_k), (size + GAP, y))
            valid = [i for i in range(len(truth)) if truth[i] >= 0]
            exact = sum(int(picks[i]) == int(truth[i]) for i in valid)
            for i in valid:
                a = cell_centre(i, grid_q, size, 0, y)
                b = cell_centre(int(picks[i]), grid_k, size, size + GAP, y)
                pen.line([a, b], fill=colour(int(picks[i]), int(truth[i]), grid_k[1]), width=1)
            pen.text((4, y - LABEL + 3), f"{label}: {exact}/{len(valid)} exact on this pair", fill="black")
            y += size
    return canvas


@torch.no_grad()
def disagreement_picture(paths: List[str], depth, weights, size: int, pairs: int, show: int, seed: int):
    """(picture, caption): of ``pairs`` seeded view pairs, the ``show`` pairs where the matchers pick different key
    cells for the most query cells, one row per appearance-based matcher; the caption holds every matcher's
    accuracy over ALL pairs."""
    batch = next(view_pairs(paths, pairs, seed, size, batch=pairs))
    model = build_resnet(depth, weights)
    variants = {name: variant for name, variant in registered_variants(load_config().MODEL).items()
                if name in list_matchers(from_geometry=False)}
    finer = [s for matcher, options in variants.values() for s in MATCHERS[matcher].stages(options)]
    fq, fk = (resnet_stages(model, batch[f"view_{v}"], tuple(dict.fromkeys(["layer4", *finer]))) for v in "qk")
    batch = {**batch, "stages_q": fq, "stages_k": fk}
    fq, fk = fq["layer4"], fk["layer4"]
    grid_q, grid_k = tuple(fq.shape[-2:]), tuple(fk.shape[-2:])
    truth = true_partners(batch["box_q"], batch["flip_q"], grid_q, batch["box_k"], batch["flip_k"], grid_k)
    picks: Dict[str, torch.Tensor] = {name: positives.index
                                      for name, positives in pick_all(fq, fk, batch, variants).items()}
    rates = {name: [float(h) / max(1, int(c)) for h, c in (matching_hits(pick, truth, grid_k[1], t) for t in (0, 1))]
             for name, pick in picks.items()}
    stacked = torch.stack(list(picks.values()))                        # [M, N, Lq]
    disagree = ((stacked != stacked[:1]).any(0) & (truth >= 0)).sum(1)
    shown = disagree.argsort(descending=True)[:show].tolist()
    caption = "\n".join([f"All {pairs} view pairs, exact / within one cell:"] + [
        f"{name}: {r[0]:.3f} / {r[1]:.3f}" for name, r in rates.items()] +
        [f"Drawn: the {show} pairs where the matchers disagree most."])
    drawn = [(batch["view_q"][i], batch["view_k"][i], truth[i], [(name, pick[i]) for name, pick in picks.items()])
             for i in shown]
    return draw(drawn, grid_q, grid_k, size, caption), caption

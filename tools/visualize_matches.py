#!/usr/bin/env python
"""The positive pairs argmax and Hough matching choose, on the view pairs where they disagree most.

    tools/visualize_matches.py --images datasets/photos --weights backbone.pth --out output/matches.png

Of --pairs seeded view pairs (the pretraining augmentation), the --show pairs where the two matchers pick
different key cells for the most query cells. Per pair: argmax (DenseCL) and Hough (HoughCL) drawn on the same
two views, each query cell with a true partner joined to its chosen key cell: green, the true partner; orange,
one cell away; red, wrong. Beside the Hough row, its Hough-space vote map (the winning slice; brighter: more
votes). The caption gives both matchers' accuracy over ALL pairs evaluated, not only the drawn ones.
"""
import argparse
import os
import sys

import torch
from PIL import Image, ImageDraw

from pretrain import matching
from pretrain.backbone import IMAGENET_MEAN, IMAGENET_STD, build_resnet, resnet_stages
from pretrain.config import load_config
from pretrain.data import list_images, readable_images
from pretrain.geometry import matching_hits, true_partners
from pretrain.matching_eval import view_pairs

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


def vote_map(votes, size):
    v = votes - votes.min()
    v = (255 * v / v.max().clamp(min=1e-12)).to(torch.uint8).numpy()
    return Image.fromarray(v).resize((size, size), Image.NEAREST).convert("RGB")


def draw(pairs, grid_q, grid_k, size, caption):
    """``pairs``: [(view_q, view_k, truth [Lq], [(label, picks [Lq])], votes [Y, X])]. Returns the picture."""
    rows = sum(len(p[3]) for p in pairs)
    lines = caption.split("\n")
    canvas = Image.new("RGB", (3 * size + 2 * GAP, rows * (size + LABEL) + LABEL * len(lines)), "white")
    pen = ImageDraw.Draw(canvas)
    for k, line in enumerate(lines):
        pen.text((4, 3 + k * LABEL), line, fill="black")
    y = LABEL * len(lines)
    for view_q, view_k, truth, matchers, votes in pairs:
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
            if label.startswith("Hough"):
                canvas.paste(vote_map(votes, size), (2 * size + 2 * GAP, y))
                pen.text((2 * size + 2 * GAP + 4, y - LABEL + 3), "Hough votes, winning slice", fill="black")
            y += size
    return canvas


@torch.no_grad()
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", required=True)
    parser.add_argument("--weights", default=None)
    parser.add_argument("--depth", type=int, default=None, help="default: that of --weights; 18 at random init")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--pairs", type=int, default=32, help="view pairs evaluated")
    parser.add_argument("--show", type=int, default=2, help="pairs drawn: those where the matchers disagree most")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="PNG to write")
    args = parser.parse_args(argv)
    paths = readable_images(list_images(args.images))
    if not paths:
        print(f"error: {args.images}: no readable image", file=sys.stderr)
        return 1
    batch = next(view_pairs(paths, args.pairs, args.seed, args.size, batch=args.pairs))
    model = build_resnet(args.depth, args.weights)
    options = matching.HoughOptions.from_cfg(load_config().MODEL.HOUGH)
    stages = tuple(dict.fromkeys(["layer4", options.layer]))
    fq, fk = (resnet_stages(model, batch[f"view_{v}"], stages) for v in ("q", "k"))
    vq, vk, fq, fk = fq[options.layer], fk[options.layer], fq["layer4"], fk["layer4"]
    grid_q, grid_k = tuple(fq.shape[-2:]), tuple(fk.shape[-2:])
    truth = true_partners(batch["box_q"], batch["flip_q"], grid_q, batch["box_k"], batch["flip_k"], grid_k)
    argmax = matching.argmax_match(fq, fk)
    hough, _, votes = matching.transform_match(fq, fk, vq, vk, options, details=True)
    rates = {}
    for name, pick in (("argmax", argmax), ("Hough", hough)):
        rates[name] = [float(h) / max(1, int(c)) for h, c in
                       (matching_hits(pick, truth, grid_k[1], t) for t in (0, 1))]
    disagree = ((argmax != hough) & (truth >= 0)).sum(1)
    shown = disagree.argsort(descending=True)[:args.show].tolist()
    caption = (f"All {args.pairs} view pairs: argmax exact {rates['argmax'][0]:.3f}, within one "
               f"{rates['argmax'][1]:.3f};\nHough exact {rates['Hough'][0]:.3f}, within one {rates['Hough'][1]:.3f}."
               f"\nDrawn: the {args.show} pairs where they disagree most.")
    pairs = [(batch["view_q"][i], batch["view_k"][i], truth[i],
              [("argmax (DenseCL)", argmax[i]), (f"Hough, {options.select} (HoughCL)", hough[i])], votes[i])
             for i in shown]
    picture = draw(pairs, grid_q, grid_k, args.size, caption)
    tmp = args.out + ".tmp.png"
    picture.save(tmp)
    os.replace(tmp, args.out)
    print(caption)
    print(f"wrote {args.out} ({picture.width}x{picture.height})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

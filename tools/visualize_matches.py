#!/usr/bin/env python
"""Draw the positive pairs that argmax and Hough matching choose between two views (cf. the paper's Figure 1).

    tools/visualize_matches.py --images datasets/photos --weights backbone.pth --out output/matches.png

Top row: DenseCL's argmax; bottom row: Hough matching; each with the two views side by side and the most
confident query cells joined to their chosen key cell. Green: within one cell of the true partner (known from
the views' geometry); red: wrong; query cells without a true partner are not drawn.
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
from pretrain.geometry import true_partners
from pretrain.matching_eval import view_pairs

GAP, LABEL = 8, 18


def to_image(view, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    x = view * torch.tensor(std).view(3, 1, 1) + torch.tensor(mean).view(3, 1, 1)
    return Image.fromarray((x.clamp(0, 1).permute(1, 2, 0).numpy() * 255).astype("uint8"))


def cell_centre(index, grid, size, x_offset, y_offset):
    h, w = grid
    return (x_offset + (index % w + 0.5) * size / w, y_offset + (index // w + 0.5) * size / h)


def draw(views, rows, grid_q, grid_k, truth, size, top):
    """``rows``: [(label, picks [Lq], confidence [Lq])]. Returns the picture."""
    width, height = 2 * size + GAP, len(rows) * (size + LABEL)
    canvas = Image.new("RGB", (width, height), "white")
    pen = ImageDraw.Draw(canvas)
    q_img, k_img = to_image(views[0]), to_image(views[1])
    for r, (label, picks, confidence) in enumerate(rows):
        y = r * (size + LABEL) + LABEL
        canvas.paste(q_img, (0, y))
        canvas.paste(k_img, (size + GAP, y))
        valid = truth >= 0
        order = [i for i in confidence.argsort(descending=True).tolist() if valid[i]][:top]
        correct = 0
        for i in order:
            j, t = int(picks[i]), int(truth[i])
            ok = max(abs(j // grid_k[1] - t // grid_k[1]), abs(j % grid_k[1] - t % grid_k[1])) <= 1
            correct += ok
            a = cell_centre(i, grid_q, size, 0, y)
            b = cell_centre(j, grid_k, size, size + GAP, y)
            pen.line([a, b], fill=(40, 200, 60) if ok else (230, 40, 40), width=2)
            pen.ellipse([a[0] - 2, a[1] - 2, a[0] + 2, a[1] + 2], fill="yellow")
        pen.text((4, y - LABEL + 3), f"{label}: {correct}/{len(order)} of the most confident matches correct",
                 fill="black")
    return canvas


@torch.no_grad()
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", required=True)
    parser.add_argument("--weights", default=None)
    parser.add_argument("--depth", type=int, default=None, help="default: that of --weights; 18 at random init")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--layer", default="layer4", choices=("layer3", "layer4"))
    parser.add_argument("--seed", type=int, default=0, help="which view pair")
    parser.add_argument("--top", type=int, default=30, help="how many matches to draw per row")
    parser.add_argument("--out", required=True, help="PNG to write")
    args = parser.parse_args(argv)
    paths = readable_images(list_images(args.images))
    if not paths:
        print(f"error: {args.images}: no readable image", file=sys.stderr)
        return 1
    batch = next(view_pairs(paths, 1, args.seed, args.size))
    model = build_resnet(args.depth, args.weights)
    options = matching.HoughOptions.from_cfg(load_config().MODEL.HOUGH)
    stages = tuple(dict.fromkeys([args.layer, options.layer]))
    fq, fk = (resnet_stages(model, batch[f"view_{v}"], stages) for v in ("q", "k"))
    views = {**batch, "vote_q": fq[options.layer], "vote_k": fk[options.layer]}
    fq, fk = fq[args.layer], fk[args.layer]
    grid_q, grid_k = tuple(fq.shape[-2:]), tuple(fk.shape[-2:])
    truth = true_partners(batch["box_q"], batch["flip_q"], grid_q, batch["box_k"], batch["flip_k"], grid_k)[0]
    sim = matching.similarity(fq, fk)
    best = sim.max(dim=2)
    picks = matching.MATCHERS["hough"](fq, fk, views, matching.MatchOptions(options)).index
    # Drawn in order of the picked pair's similarity, as argmax's rows are.
    rows = [("argmax (DenseCL)", best.indices[0], best.values[0]),
            (f"Hough, {options.space}, {options.select} (HoughCL)", picks[0], sim[0].gather(1, picks[0:1].T)[:, 0])]
    picture = draw((batch["view_q"][0], batch["view_k"][0]), rows, grid_q, grid_k, truth, args.size, args.top)
    tmp = args.out + ".tmp.png"
    picture.save(tmp)
    os.replace(tmp, args.out)
    print(f"wrote {args.out} ({picture.width}x{picture.height})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The pretraining step and the matchers, timed for tools/benchmark.py (``step``, ``match``): every variant runs
in turn (pretrain/bench/timing.py), so that drifts of the machine hit all of them; ratios are medians of same-round
ratios."""
import time

import torch
import torch.nn.functional as F

from pretrain.backbone import resnet_features
from pretrain.bench.timing import interleaved, paired_ratio, peak_memory, sync
from pretrain.builder import ContrastiveModel
from pretrain.config import get_cfg
from pretrain.engine import amp_dtype, autocast_context, train_step
from pretrain.matchers import MATCHERS, list_matchers
from pretrain.matchers.hough_transform import VOTE_LAYERS

# MoCo-v2 (no dense branch), then one step variant per registered matcher, named after it.
STEP_VARIANTS = {"mocov2": ["MODEL.LOSS_LAMBDA", 0.0], **{name: ["MODEL.MATCHER", name] for name in list_matchers()}}


def step_cfg(args, opts):
    cfg = get_cfg()
    cfg.merge_from_list(["MODEL.DEPTH", args.depth, "INPUT.SIZE", args.size, "SOLVER.BATCH_SIZE", args.batch,
                         "MODEL.QUEUE_SIZE", 4096, "SOLVER.AMP", "bf16" if args.amp else "off", *opts])
    return cfg


def random_batch(args, batch_size, device, channels_last):
    g = torch.Generator().manual_seed(0)
    n, s = batch_size, args.size
    views = [torch.randn(n, 3, s, s, generator=g) for _ in range(2)]
    if channels_last:
        views = [v.contiguous(memory_format=torch.channels_last) for v in views]
    boxes = torch.tensor([[0.0, 0.0, 2.0 * s, 2.0 * s]]).repeat(n, 1)
    batch = {"view_q": views[0], "view_k": views[1], "box_q": boxes, "box_k": boxes * 0.8,
             "flip_q": torch.zeros(n, dtype=torch.bool), "flip_k": torch.arange(n) % 2 == 0}
    return {k: v.to(device) for k, v in batch.items()}


def step_function(args, opts, batch, device, channels_last):
    """One training step of a method (``opts``), as the training loop runs it; the floor when ``opts`` is None:
    the bare backbone, forward+backward of the query view and forward of the key view. ``.model``: what it trains."""
    cfg = step_cfg(args, opts or STEP_VARIANTS["mocov2"])
    torch.manual_seed(0)
    model = ContrastiveModel(cfg).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if args.compile:
        model.encoder_q.compile()
        model.encoder_k.compile()
    autocast, scaler = autocast_context(amp_dtype(cfg, device))
    if opts is None:
        backbone, key_backbone = model.encoder_q.backbone, model.encoder_k.backbone
        optimizer = torch.optim.SGD(backbone.parameters(), lr=0.01, momentum=0.9)

        def floor():
            with autocast():
                loss = resnet_features(backbone, batch["view_q"]).float().mean()
                with torch.no_grad():
                    resnet_features(key_backbone, batch["view_k"])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        floor.model = model
        return floor
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9)

    def step():
        train_step(model, batch, optimizer, scaler, autocast, 0.5)
    step.model = model
    return step


def first_call_seconds(fn, device) -> float:
    """The first call's time: with --compile, mostly compilation."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def largest_batch(args, device, channels_last, variant="hough") -> int:
    """The largest power-of-two batch (from --batch up) whose step fits in GPU memory."""
    batch_size, fits = args.batch, 0
    while batch_size <= args.max_batch_limit:
        try:
            batch = random_batch(args, batch_size, device, channels_last)
            step_function(args, STEP_VARIANTS[variant], batch, device, channels_last)()
            sync(device)
            fits = batch_size
        except torch.OutOfMemoryError:
            break
        finally:
            torch.cuda.empty_cache()
        batch_size *= 2
    return fits


def bench_step(args):
    device = torch.device(args.device)
    channels_last = device.type == "cuda" and not args.no_channels_last
    batch = random_batch(args, args.batch, device, channels_last)
    # A matcher that refuses views of this size (too few voters for hough_transform) is left out, and said so.
    refused = {name: MATCHERS[name].input_problem(args.size, MATCHERS[name].default_options()) for name in MATCHERS}
    refused = {name: why for name, why in refused.items() if why}
    functions = {name: step_function(args, opts, batch, device, channels_last) for name, opts in STEP_VARIANTS.items()
                 if name not in refused}
    functions["floor"] = step_function(args, None, batch, device, channels_last)
    first_call = {name: first_call_seconds(fn, device) for name, fn in functions.items()}
    timing = interleaved(functions, args.warmup, args.repeats, device)
    step = {name: t["median"] for name, t in timing.items()}
    ratios = {**{f"{name}/argmax": paired_ratio(timing, name, "argmax") for name in list_matchers()
                 if name != "argmax" and name not in refused},
              "hough/floor": paired_ratio(timing, "hough", "floor"),
              "argmax/mocov2": paired_ratio(timing, "argmax", "mocov2")}
    images_per_s = {name: args.batch / t for name, t in step.items()}
    result = {"step": step, "ratios": ratios, "spread": timing, "images_per_s": images_per_s, "not_run": refused,
              "first_call_s": first_call,
              "settings": {"depth": args.depth, "size": args.size, "batch": args.batch, "device": str(device),
                           "amp": args.amp, "channels_last": channels_last, "compile": args.compile}}
    if device.type == "cuda":
        result["peak_memory_bytes"] = {name: peak_memory(fn, (), device) for name, fn in functions.items()}
        if args.max_batch:
            del functions, batch
            torch.cuda.empty_cache()
            result["largest_batch"] = {"hough": largest_batch(args, device, channels_last)}
    return result


def bench_match(args):
    """Every appearance-based matcher with its default options on random feature grids. A matcher that reads a
    finer backbone stage gets the grid's features at twice the resolution with a quarter of the channels as that
    stage (ResNet-50's layer3 against C5: 2x, half the channels; layer2: 4x, a quarter)."""
    device = torch.device(args.device)
    result = {}
    names = list_matchers(from_geometry=False)
    for grid in args.grids:
        fq = torch.randn(args.match_batch, args.channels, grid, grid, device=device)
        fk = torch.randn(args.match_batch, args.channels, grid, grid, device=device)
        finer_q, finer_k = (F.interpolate(f[:, :args.channels // 4], scale_factor=2.0) for f in (fq, fk))
        views = {"stages_q": dict.fromkeys(VOTE_LAYERS, finer_q), "stages_k": dict.fromkeys(VOTE_LAYERS, finer_k)}
        functions = {name: (lambda m=MATCHERS[name]: m(fq, fk, views)) for name in names}
        timing = interleaved(functions, 1, args.match_repeats, device)
        result[str(grid)] = {
            name: {"seconds": t["median"], "min": t["min"], "max": t["max"],
                   "peak_bytes": peak_memory(functions[name], (fq, fk), device)}
            for name, t in timing.items()}
        for name in names[1:]:
            result[str(grid)][f"ratio_{name}/argmax"] = timing[name]["median"] / timing["argmax"]["median"]
        result[str(grid)]["bytes_of_N_Lq_Lk_slices_tensor"] = args.match_batch * grid ** 4 * 10 * 4
    return {"match": result, "settings": {"batch": args.match_batch, "channels": args.channels,
                                          "device": str(device)}}

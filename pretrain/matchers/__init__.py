"""The matchers: one name -> implementation table that config, model, diagnostics, tools and docs read.

A matcher chooses, for every query cell, the positive key cell(s) of the dense loss from the two views' C5
features ``fq [N, C, Hq, Wq]``, ``fk [N, C, Hk, Wk]`` and ``views`` (each view's crop box and flip, and the finer
backbone stages a matcher asked for). It builds no autograd graph: positives are picked, not learned.

Registered here:
- ``argmax`` (DenseCL): the most similar key cell.
- ``hough`` (HoughCL): per-pair probabilistic Hough confidence (``pretrain/matchers/hough.py``); its defaults are the
  published reference (RHM at C5), every other option is the toolkit's.
- ``hough_transform`` (an extension of this toolkit, not in the paper): one transformation per pair of views
  estimated by Hough voting, positives where it maps each cell (``pretrain/matchers/hough_transform.py``).
- ``threshold`` (PixPro-style): every key cell closer than a threshold in the image (from the crop boxes).
- ``geometric`` (oracle): the true partner from the crop boxes and flips.
- ``random`` (the negative control, not a method): a key cell drawn uniformly for every query cell, from a seed
  that is a function of the sample (its views' crop boxes and flips, its dataset index): the same draw in any
  worker, process layout or resume, new draws when the sample's views are new.

Each matcher owns its options: a frozen dataclass whose fields are the keys of ``MODEL.<NAME>`` in the
pretraining config (``MODEL.HOUGH.SIGMA`` is ``HoughOptions.sigma``); its defaults are the config's defaults.
"""
import dataclasses
import hashlib
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

import torch
from torch import Tensor

from pretrain.data.geometry import threshold_positives, true_partners
from pretrain.matchers.hough import HoughOptions, hough_match, similarity
from pretrain.matchers.hough_transform import TransformOptions, input_problem, transform_match, voting_features


class Positives(NamedTuple):
    """A matcher's choice of positive key cells: ``index [N, Lq]`` (-1 for none), or ``mask [N, Lq, Lk]`` for
    matchers that give several positives per query cell; the other field is None. ``stats``: named 0-d tensors
    the matcher reports about its choice (logged with the losses)."""
    index: Optional[Tensor] = None
    mask: Optional[Tensor] = None
    stats: Dict[str, Tensor] = {}

    def valid(self) -> Tensor:
        """``[N, Lq]`` bool: the query cells that have a positive."""
        return self.index >= 0 if self.index is not None else self.mask.any(-1)


@dataclasses.dataclass(frozen=True)
class ThresholdOptions:
    """PixPro's positives (``MODEL.THRESHOLD``): key cells whose centre lies closer than ``ratio`` times the
    larger cell diagonal to the query cell's centre, both mapped into the original image."""
    ratio: float = 0.7


@dataclasses.dataclass(frozen=True)
class Matcher:
    """A registered matcher: ``match(fq, fk, views, options) -> Positives``, what it is called in tables
    (``label``), its options class (or None), whether it chooses otherwise than by appearance
    (``from_geometry``: the oracle and PixPro's threshold read the crop boxes; ``random`` seeds its draw from
    them), ``stages(options)``: the backbone stages besides C5 it needs in ``views``, and
    ``input_problem(input_size, options)``: why views of that size cannot be matched with these options, or None.
    """
    name: str
    match: Callable[[Tensor, Tensor, Dict, Any], Positives]
    label: str
    options: Optional[type] = None
    from_geometry: bool = False
    stages: Callable[[Any], Tuple[str, ...]] = lambda options: ()
    input_problem: Callable[[int, Any], Optional[str]] = lambda size, options: None

    @property
    def config_key(self) -> str:
        """Its options' node in the pretraining config, under ``MODEL``."""
        return self.name.upper()

    def default_options(self):
        return self.options() if self.options else None

    def __call__(self, fq: Tensor, fk: Tensor, views: Dict, options=None) -> Positives:
        return self.match(fq, fk, views, self.default_options() if options is None else options)


MATCHERS: Dict[str, Matcher] = {}


def register(name: str, label: str, options: Optional[type] = None, from_geometry: bool = False, **hooks):
    """Add ``fn`` to MATCHERS under ``name``; ``hooks``: ``stages`` and ``input_problem`` (see ``Matcher``)."""
    def add(fn):
        MATCHERS[name] = Matcher(name, fn, label, options, from_geometry, **hooks)
        return fn
    return add


def list_matchers(from_geometry: Optional[bool] = None) -> List[str]:
    """The registered names, in registration order; only those (not) reading the crop boxes when asked."""
    return [n for n, m in MATCHERS.items() if from_geometry is None or m.from_geometry == from_geometry]


def get_matcher(name: str) -> Matcher:
    try:
        return MATCHERS[name]
    except KeyError:
        raise KeyError(f"unknown matcher {name!r}; registered: {', '.join(MATCHERS)}") from None


def describe_matcher(name: str) -> str:
    return get_matcher(name).label


def options_from_cfg(model_node, name: str):
    """The options of matcher ``name`` from the config node ``MODEL`` (None for a matcher without options)."""
    matcher = get_matcher(name)
    if matcher.options is None:
        return None
    node = model_node[matcher.config_key]
    values = {}
    for field in dataclasses.fields(matcher.options):
        value = node[field.name.upper()]
        values[field.name] = tuple(value) if isinstance(value, (list, tuple)) else value
    return matcher.options(**values)


def all_options_from_cfg(model_node) -> Dict[str, Any]:
    return {name: options_from_cfg(model_node, name) for name in MATCHERS}


def _geometry(fq: Tensor, fk: Tensor, views: Dict[str, Tensor]):
    return (views["box_q"], views["flip_q"], tuple(fq.shape[-2:]), views["box_k"], views["flip_k"],
            tuple(fk.shape[-2:]))


@torch.no_grad()
def argmax_match(fq: Tensor, fk: Tensor) -> Tensor:
    """DenseCL: each query cell takes the most similar key cell. Returns ``[N, Lq]``."""
    return similarity(fq, fk).argmax(dim=2)


@register("argmax", "DenseCL (argmax)")
def _argmax(fq, fk, views, options):
    return Positives(index=argmax_match(fq, fk))


@register("hough", "HoughCL (per-pair Hough confidence)", HoughOptions)
def _hough(fq, fk, views, options: HoughOptions):
    return Positives(index=hough_match(fq, fk, options))


@register("hough_transform", "estimated-geometry positives (hough_transform; an extension of this toolkit, "
          "not in the paper)", TransformOptions,
          stages=lambda options: () if options.layer == "layer4" else (options.layer,), input_problem=input_problem)
def _hough_transform(fq, fk, views, options: TransformOptions):
    index, inside = transform_match(fq, fk, *voting_features(fq, fk, views, options.layer), options)
    return Positives(index=index, stats={"outside_share": 1.0 - inside.float().mean()})


@register("threshold", "PixPro-style (distance threshold)", ThresholdOptions, from_geometry=True)
def _threshold(fq, fk, views, options: ThresholdOptions):
    return Positives(mask=threshold_positives(*_geometry(fq, fk, views), ratio=options.ratio))


@register("geometric", "geometric oracle", from_geometry=True)
def _geometric(fq, fk, views, options):
    return Positives(index=true_partners(*_geometry(fq, fk, views)))


def sample_seeds(views: Dict[str, Tensor]) -> List[int]:
    """One 64-bit seed per sample of a batch, from what fixes its views: crop boxes, flips and (in pretraining)
    its dataset index. The views of a sample are a function of (seed, epoch, index), so are these seeds."""
    parts = [views["box_q"], views["box_k"], views["flip_q"], views["flip_k"]]
    if "index" in views:
        parts.append(views["index"])
    rows = torch.cat([p.detach().to("cpu", torch.float64).reshape(len(p), -1) for p in parts], dim=1)
    return [int.from_bytes(hashlib.sha256(row.numpy().tobytes()).digest()[:8], "little") for row in rows]


@torch.no_grad()
def random_positives(seeds: List[int], lq: int, lk: int, device=None) -> Tensor:
    """``[N, Lq]``: for every query cell a key cell drawn uniformly from ``lk``, sample n drawn from ``seeds[n]``."""
    drawn = [torch.randint(lk, (lq,), generator=torch.Generator().manual_seed(seed)) for seed in seeds]
    return torch.stack(drawn).to(device)


@register("random", "random positives (negative control, not a method)", from_geometry=True)
def _random(fq, fk, views, options):
    return Positives(index=random_positives(sample_seeds(views), fq.shape[-2] * fq.shape[-1],
                                            fk.shape[-2] * fk.shape[-1], fq.device))

"""A fine-tuning data stream that a resume continues exactly, as pretraining's does.

Detectron2's training loader restarts its sampler on resume and draws augmentations from each worker's own random
state, so a run resumed from a checkpoint sees other images, other flips and crops than the run that was killed.
Here everything the stream yields is a pure function of the seed, the process's rank and the iteration:

- position p of the stream (one global stream; rank r takes positions r, r + W, r + 2W, ... as Detectron2's
  TrainingSampler does) holds image ``permutation(seed, p // N)[p % N]``: each epoch a fresh seeded permutation;
- the mapper (resize, flip, crop, photometric steps) of position p runs with Python's, NumPy's and torch's random
  generators seeded from (seed, p), whichever worker maps it, so the number of workers does not change the draws;
- the state at iteration i (the next position, and the images that aspect-ratio grouping holds back in its two
  buckets) is replayed from the images' widths and heights alone, without reading an image.

``TransferTrainer`` also seeds the generators of the training step (the RPN's and ROI heads' sampling) from
(seed, rank, iteration): see ``step_seed``.
"""
import contextlib
import itertools
import operator
import random
from typing import Iterator, List, Sequence, Tuple

import numpy as np
import torch
from detectron2.data import DatasetFromList
from detectron2.data.build import worker_init_reset_seed
from detectron2.data.common import AspectRatioGroupedDataset, ToIterableDataset
from detectron2.utils import comm
from torch.utils.data import DataLoader, Dataset, Sampler


def mixed_seed(*words: int) -> int:
    """A 31-bit seed from integers (NumPy's SeedSequence: well mixed, the same on every platform)."""
    return int(np.random.SeedSequence([int(w) for w in words]).generate_state(1)[0] & 0x7FFFFFFF)


def step_seed(seed: int, rank: int, iteration: int) -> int:
    """The seed of the random generators for one training step of one process."""
    return mixed_seed(seed, 1, rank, iteration)


def seed_generators(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@contextlib.contextmanager
def seeded(seed: int):
    """The global generators seeded with ``seed`` inside, restored after (so that mapping an image in the main
    process, NUM_WORKERS 0, does not move the training step's draws)."""
    python, numpy = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        seed_generators(seed)
        try:
            yield
        finally:
            random.setstate(python)
            np.random.set_state(numpy)


class StreamOrder:
    """Which image each position of the global stream holds: a seeded permutation of the N images per epoch."""

    def __init__(self, size: int, seed: int):
        if size <= 0:
            raise ValueError("the training set is empty")
        self.size, self.seed, self._epoch, self._order = size, seed, -1, None

    def __call__(self, position: int) -> int:
        epoch, offset = divmod(position, self.size)
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(mixed_seed(self.seed, 2, epoch))
            self._epoch, self._order = epoch, torch.randperm(self.size, generator=generator).tolist()
        return self._order[offset]


class PositionSampler(Sampler):
    """This process's positions of the global stream from its k-th on, after ``replay`` (positions that aspect
    grouping held back when the run stopped: yielded again first, into the same buckets)."""

    def __init__(self, start: int, replay: Sequence[int] = (), rank: int = 0, world_size: int = 1):
        self.start, self.replay, self.rank, self.world_size = start, list(replay), rank, world_size

    def __iter__(self) -> Iterator[int]:
        yield from self.replay
        for k in itertools.count(self.start):
            yield self.rank + k * self.world_size


class PositionedDataset(Dataset):
    """``dataset[p]``: the mapped image of stream position p, its random draws seeded from (seed, p)."""

    def __init__(self, dicts: List[dict], mapper, seed: int):
        self.dicts = DatasetFromList(dicts, copy=False)  # serialised: each item comes back as a fresh copy
        self.order, self.mapper, self.seed = StreamOrder(len(dicts), seed), mapper, seed

    def __len__(self) -> int:
        return len(self.dicts)

    def __getitem__(self, position: int):
        index = self.order(position)
        with seeded(mixed_seed(self.seed, 3, position)):
            item = self.mapper(self.dicts[index])
        if item is None:  # Detectron2 would draw another image at random: not reproducible, so refuse
            raise ValueError(f"the training mapper dropped image {self.dicts[index].get('file_name', index)}")
        return item


def replay_state(dicts: List[dict], seed: int, iterations: int, batch_size: int, grouping: bool,
                 rank: int = 0, world_size: int = 1) -> Tuple[int, List[int]]:
    """(k, held): after ``iterations`` batches of ``batch_size``, this process has read its positions up to its
    k-th, and aspect-ratio grouping holds ``held`` (positions, in the order they came) back in its buckets."""
    if not grouping:
        return iterations * batch_size, []
    order, buckets, k, batches = StreamOrder(len(dicts), seed), ([], []), 0, 0
    while batches < iterations:
        position = rank + k * world_size
        record = dicts[order(position)]
        bucket = buckets[0 if record["width"] > record["height"] else 1]  # AspectRatioGroupedDataset's rule
        bucket.append(position)
        k += 1
        if len(bucket) == batch_size:
            batches += 1
            bucket.clear()
    return k, sorted(buckets[0] + buckets[1], key=lambda p: (p - rank) // world_size)


def build_stream_loader(dicts: List[dict], mapper, seed: int, total_batch_size: int, grouping: bool,
                        num_workers: int, start_iter: int = 0):
    """The training loader over the positioned stream, continuing at iteration ``start_iter``: lists of
    IMS_PER_BATCH / world size mapped images, grouped by orientation as Detectron2's AspectRatioGroupedDataset does
    when ``grouping``."""
    world_size, rank = comm.get_world_size(), comm.get_rank()
    if total_batch_size % world_size:
        raise ValueError(f"SOLVER.IMS_PER_BATCH {total_batch_size} is not divisible by the {world_size} processes")
    batch_size = total_batch_size // world_size
    start, held = replay_state(dicts, seed, start_iter, batch_size, grouping, rank, world_size)
    dataset = ToIterableDataset(PositionedDataset(dicts, mapper, seed),
                                PositionSampler(start, held, rank, world_size))
    # One image per item, in stream order whatever the number of workers (they take turns); batched here, in the
    # main process, so that a batch is consecutive positions (Detectron2 batches inside each worker when it does
    # not group: then the batches, and where a resume must start, depend on NUM_WORKERS).
    # Its own generator: creating the loader's iterator (at the first batch, and again on resume) then draws
    # nothing from the global one that the training step samples from.
    items = DataLoader(dataset, num_workers=num_workers, collate_fn=operator.itemgetter(0),
                       worker_init_fn=worker_init_reset_seed,
                       generator=torch.Generator().manual_seed(mixed_seed(seed, 4, rank)))
    return AspectRatioGroupedDataset(items, batch_size) if grouping else Batches(items, batch_size)


class Batches:
    """Consecutive items in lists of ``batch_size``."""

    def __init__(self, items, batch_size: int):
        self.items, self.batch_size = items, batch_size

    def __iter__(self):
        iterator = iter(self.items)
        while True:
            yield [next(iterator) for _ in range(self.batch_size)]


class ResumableLoader:
    """The training loader, built when iteration starts: ``start_iter`` is known only after ``resume_or_load``,
    and Detectron2's trainer asks for an iterator before that."""

    def __init__(self, build, start_iter: int = 0):
        self.build, self.start_iter = build, start_iter

    def __iter__(self):
        yield from self.build(self.start_iter)

"""transfer/finetune/data_stream.py: the fine-tuning stream continues exactly at any iteration, with any number of
workers."""
import itertools
import random

import numpy as np
import pytest
import torch

pytest.importorskip("detectron2")

from transfer.finetune.data_stream import (  # noqa: E402
    PositionedDataset,
    StreamOrder,
    build_stream_loader,
    replay_state,
    seeded,
)


def records(n=7):
    """Images of both orientations, so that aspect-ratio grouping holds some back."""
    return [{"file_name": f"{i}.jpg", "width": 100 + 10 * (i % 3 == 0), "height": 100 + 10 * (i % 3 != 0)}
            for i in range(n)]


def draw(record):
    """A mapper whose output is its random draws (as a flip or a crop would be)."""
    return {**record, "draw": (random.random(), float(np.random.rand()), float(torch.rand(())))}


def batches(loader, count):
    return [[(d["file_name"], d["draw"]) for d in batch] for batch in itertools.islice(loader, count)]


@pytest.mark.parametrize("grouping", [True, False])
@pytest.mark.parametrize("rank,world_size", [(0, 1), (1, 2)])
def test_a_stream_started_at_iteration_i_equals_the_rest_of_the_uninterrupted_one(grouping, rank, world_size,
                                                                                  monkeypatch):
    monkeypatch.setattr("detectron2.utils.comm.get_rank", lambda: rank)
    monkeypatch.setattr("detectron2.utils.comm.get_world_size", lambda: world_size)
    dicts = records()
    whole = batches(build_stream_loader(dicts, draw, 5, 3 * world_size, grouping, 0), 12)
    for start in (1, 4, 7):
        resumed = batches(build_stream_loader(dicts, draw, 5, 3 * world_size, grouping, 0, start_iter=start), 5)
        assert resumed == whole[start:start + 5]
    if grouping:  # the orientations really were held back and mixed in order
        assert any(replay_state(dicts, 5, i, 3, True, rank, world_size)[1] for i in (1, 4, 7))


def test_the_number_of_workers_does_not_change_a_draw():
    dicts = records()
    alone, workers = (batches(build_stream_loader(dicts, draw, 1, 2, False, n), 6) for n in (0, 2))
    assert alone == workers
    assert len({d for batch in alone for _, d in batch}) == 12  # and the draws differ from image to image


def test_every_epoch_is_a_permutation_and_the_seed_changes_it():
    order = StreamOrder(7, seed=3)
    epochs = [[order(p) for p in range(e * 7, e * 7 + 7)] for e in range(3)]
    assert all(sorted(e) == list(range(7)) for e in epochs) and epochs[0] != epochs[1]
    assert [StreamOrder(7, seed=4)(p) for p in range(7)] != epochs[0]


def test_mapping_an_image_leaves_the_global_generators_where_they_were():
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    expected = (random.random(), np.random.rand(), torch.rand(()))
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    PositionedDataset(records(), draw, seed=2)[5]
    with seeded(9):
        random.random()
    assert (random.random(), np.random.rand(), torch.rand(())) == expected


def test_a_mapper_that_drops_an_image_is_refused_by_name():
    with pytest.raises(ValueError, match=r"dropped image \d\.jpg"):
        PositionedDataset(records(), lambda record: None, seed=0)[0]

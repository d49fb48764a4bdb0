"""Block-wise segmentation must find the same objects as the in-memory path, uncut, ids unique."""

import dask.array as da
import numpy as np
import pytest

from napari_loopseg.core.bigdata import plan_blocks, segment_large
from napari_loopseg.core.metrics import Counts
from napari_loopseg.core.segment import segment
from napari_loopseg.core.synthetic import make_nuclei


@pytest.fixture(scope="module")
def image():
    return make_nuclei((420, 380), seed=9)[0]


def _same_objects(reference: np.ndarray, blocked: np.ndarray) -> None:
    counts = Counts()
    counts.add(reference, blocked)
    assert reference.max() > 20  # enough objects, some across block borders
    assert counts.ap(0.9) >= 0.99, counts.summary()
    ids = np.unique(blocked)
    assert ids[-1] == len(ids) - 1  # unique, consecutive ids


def test_blocks_match_in_memory_with_threads(tiny_model, image):
    reference = segment(image, model=tiny_model, precision="fp32")
    blocked = segment_large(image, model="tiny", block_size=128, scheduler="threads", precision="fp32")
    _same_objects(reference, blocked)


def test_blocks_match_on_a_local_cluster(tiny_model, image):
    """A real dask.distributed cluster, two worker processes, a lazy dask input."""
    distributed = pytest.importorskip("distributed")
    reference = segment(image, model=tiny_model, precision="fp32")
    lazy = da.from_array(image, chunks=100)
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    )
    with cluster, distributed.Client(cluster) as client:
        blocked = segment_large(lazy, model="tiny", block_size=128, scheduler=client, precision="fp32")
    _same_objects(reference, blocked)


def test_block_plan_covers_the_image_once():
    blocks = plan_blocks((300, 250), block=128, link=32, halo=24)
    cover = np.zeros((300, 250), int)
    for block in blocks:
        cover[block.core] += 1
        assert all(r.start <= c.start and r.stop >= c.stop for r, c in zip(block.read, block.core))
    assert (cover == 1).all() and len(blocks) == 6

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
    from napari_loopseg.core.cluster import local_cluster

    cluster = local_cluster(2)
    assert isinstance(cluster, distributed.LocalCluster) and len(cluster.workers) == 2
    with cluster, distributed.Client(cluster) as client:
        blocked = segment_large(lazy, model="tiny", block_size=128, scheduler=client, precision="fp32")
    _same_objects(reference, blocked)


def test_block_plan_covers_the_image_once():
    blocks = plan_blocks((300, 250), block=128, link=32, halo=24)
    cover = np.zeros((300, 250), int)
    for block in blocks:
        cover[block.core] += 1
        assert all(
            r.start <= c.start and r.stop >= c.stop for r, c in zip(block.read, block.core, strict=True)
        )
    assert (cover == 1).all() and len(blocks) == 6


def test_progress_rises_and_closing_stops_early(tiny_model, image, monkeypatch):
    from napari_loopseg.core import bigdata

    ran = []
    original = bigdata.run_block
    monkeypatch.setattr(bigdata, "run_block", lambda *args: ran.append(1) or original(*args))
    gen = bigdata.segment_large_iter(image, model="tiny", block_size=96, scheduler="sync", precision="fp32")
    progress = [next(gen) for _ in range(4)]  # statistics, then one block per step
    fractions = [p.fraction for p in progress]
    assert fractions == sorted(fractions) and progress[-1].stage == "block 3/20" and len(ran) == 3
    gen.close()  # cancelled: the remaining blocks never run
    assert len(ran) == 3


def test_overview_levels_subsample_labels(tmp_path):
    from napari_loopseg.core.zarr_io import add_pyramid, create_labels, ome_meta

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 50, (1000, 600)).astype(np.uint32)
    create_labels(tmp_path / "l.zarr", labels.shape, 128, ome_meta((0.5, 0.25)))[:] = labels
    levels = add_pyramid(tmp_path / "l.zarr", smallest=256)
    assert [lv.shape for lv in levels] == [(1000, 600), (500, 300), (250, 150)]
    np.testing.assert_array_equal(levels[2][:], labels[::4, ::4])  # ids subsampled, never averaged
    import zarr

    datasets = zarr.open_group(str(tmp_path / "l.zarr"), mode="r").attrs["multiscales"][0]["datasets"]
    assert [d["coordinateTransformations"][0]["scale"] for d in datasets] == [
        [0.5, 0.25],
        [1.0, 0.5],
        [2.0, 1.0],
    ]


def test_blocks_match_in_memory_with_dynamic_seeds(tiny_model, image, model_dir):
    """Seeds chosen by their dynamic (the bundled model's rule) depend on whole clumps of
    foreground, not on one pixel: blocks still find the in-memory objects."""
    from napari_loopseg.core.instances import DecodeParams
    from napari_loopseg.core.registry import load_model, save_model

    card = dict(tiny_model.card, name="tiny-dynamic")
    card["decode"] = DecodeParams(foreground=0.5, min_area=12, seed_dynamic=0.2, seed_smoothing=1.0).to_dict()
    save_model(tiny_model.net, card, model_dir)
    dynamic = load_model("tiny-dynamic")
    reference = segment(image, model=dynamic, precision="fp32")
    blocked = segment_large(
        image, model="tiny-dynamic", block_size=128, scheduler="threads", precision="fp32"
    )
    _same_objects(reference, blocked)

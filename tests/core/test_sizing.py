"""Object size: measured diameters, when to rescale, and rescaling that keeps the pixel grid."""

from dataclasses import replace

import numpy as np
import pytest

from napari_loopseg.core.metrics import Counts
from napari_loopseg.core.normalize import InputError
from napari_loopseg.core.progress import drive
from napari_loopseg.core.registry import load_path
from napari_loopseg.core.segment import segment
from napari_loopseg.core.sizing import (
    Diameters,
    object_diameters,
    probed_factor,
    refined_factor,
    uncertainty,
)
from napari_loopseg.core.synthetic import make_nuclei


def _discs(radius: int, n: int = 6) -> np.ndarray:
    labels = np.zeros((n * 4 * radius, 4 * radius), np.uint16)
    yy, xx = np.mgrid[: 4 * radius, : 4 * radius]
    disc = (yy - 2 * radius) ** 2 + (xx - 2 * radius) ** 2 <= radius**2
    for i in range(n):
        labels[i * 4 * radius : (i + 1) * 4 * radius][disc] = i + 1
    return labels


def test_diameters_of_discs():
    assert np.allclose(object_diameters(_discs(10)), 20, atol=0.5)
    measured = Diameters.measure([_discs(10), _discs(20), np.zeros((5, 5), np.uint16)])
    assert measured.median == pytest.approx(30, abs=11) and measured.low < 21 and measured.high > 39
    one_size = Diameters.measure([_discs(10)])  # a few corrected images: still a tolerant range
    assert one_size.low == pytest.approx(20 / 1.5, abs=0.3) and one_size.high == pytest.approx(30, abs=0.5)
    assert Diameters.measure([np.zeros((4, 4), np.uint16)]) is None


def test_refined_factor_moves_only_beyond_the_tolerance():
    reference = Diameters(median=20, low=10, high=40)
    assert refined_factor(_discs(11), reference, 1.0) is None  # 22 px: close enough
    assert refined_factor(_discs(40), reference, 1.0) == pytest.approx(20 / 80, rel=0.02)  # 80 px
    assert refined_factor(_discs(3), reference, 1.0) == pytest.approx(20 / 6, rel=0.1)  # 6 px
    assert refined_factor(_discs(40), reference, 0.26) is None  # already there
    assert refined_factor(_discs(40, n=3), reference, 1.0) is None  # too few objects to tell


def test_nuclei_within_the_training_range_stay_as_they_are():
    reference = Diameters(median=20, low=10, high=40)
    assert refined_factor(_discs(15), reference, 1.0) is None  # 30 px: learned, so left alone
    assert refined_factor(_discs(15), reference, 0.5) == pytest.approx(20 / 30, rel=0.02)  # once resized


def test_probed_factor_only_ever_shrinks():
    reference = Diameters(median=20, low=10, high=40)
    assert probed_factor(_discs(30), reference) == pytest.approx(20 / 60, rel=0.02)  # 60 px: shrink
    assert probed_factor(_discs(11), reference) is None  # 22 px: the original size decides
    assert probed_factor(_discs(4), reference) is None  # small: only a pass at full size can tell
    assert probed_factor(_discs(30, n=3), reference) is None  # too few objects survived


def test_estimate_starts_shrunk_so_large_nuclei_are_not_taken_for_fragments(monkeypatch):
    """The first estimating pass runs on the plane shrunk by half; what it finds sets the factor of
    the next pass. Here every pass "finds" 60 px nuclei: shrink to 20 / 60, then stop refining."""
    from napari_loopseg.core import segment as segment_module

    factors = []

    def fake_pass(predictor, plane, params, factor, base, n_planes):
        factors.append(factor)
        yield from ()
        return _discs(30), 0.2

    monkeypatch.setattr(segment_module, "_segment_plane", fake_pass)

    class Model:
        diameters = Diameters(median=20, low=10, high=40)

    gen = segment_module._estimate(None, np.zeros((512, 512), np.float32), None, Model(), 0.0, 1, "")
    factor, _ = drive(gen)
    assert factors[0] == 0.5 and factors[1] == pytest.approx(20 / 60, rel=0.02)
    assert len(factors) == 2 and factor == factors[1]


def test_estimate_falls_back_to_full_size_when_shrunk_nuclei_vanish(monkeypatch):
    """Crowded small nuclei can merge into large blobs in the shrunk pass; if shrinking further
    then finds nothing, the pass at the original size decides as without the probe."""
    from napari_loopseg.core import segment as segment_module

    factors = []

    def fake_pass(predictor, plane, params, factor, base, n_planes):
        factors.append(factor)
        yield from ()
        if factor == 0.5:  # the probe, however sure, found merged crowds: not a candidate
            return _discs(30), 0.05
        return {1.0: _discs(11)}.get(factor, np.zeros((64, 64), np.uint16)), 0.2

    monkeypatch.setattr(segment_module, "_segment_plane", fake_pass)

    class Model:
        diameters = Diameters(median=20, low=10, high=40)

    factor, _ = drive(
        segment_module._estimate(None, np.zeros((512, 512), np.float32), None, Model(), 0.0, 1, "")
    )
    assert factors == [0.5, pytest.approx(20 / 60, rel=0.02), 1.0] and factor == 1.0


def test_estimate_keeps_the_pass_the_network_was_surest_of(monkeypatch):
    """Large nuclei fragment once resized too little, and fragments measure small, so refinements
    run back towards the original size; the half-size pass, where the network was surest, wins."""
    from napari_loopseg.core import segment as segment_module

    found = {0.5: (_discs(22), 0.15), 20 / 44: (_discs(15), 0.19)}  # 44 px, then fragments of 30 px

    def fake_pass(predictor, plane, params, factor, base, n_planes):
        factors.append(factor)
        yield from ()
        for known, result in found.items():
            if factor == pytest.approx(known, rel=0.02):
                return result
        return _discs(8), 0.22  # more fragments

    factors: list[float] = []
    monkeypatch.setattr(segment_module, "_segment_plane", fake_pass)

    class Model:
        diameters = Diameters(median=20, low=10, high=40)

    factor, labels = drive(
        segment_module._estimate(None, np.zeros((512, 512), np.float32), None, Model(), 0.0, 1, "")
    )
    assert len(factors) == 4 and factors[-1] > factors[1]  # refinements turned back, as measured
    assert factor == 0.5
    np.testing.assert_array_equal(labels, _discs(22))


@pytest.mark.parametrize(("unsure_as_is", "expected"), [(0.18, 1.0), (0.25, 20 / 30)])
def test_a_shrink_within_the_training_range_must_beat_the_original_size(monkeypatch, unsure_as_is, expected):
    """The half-size pass finds 30 px nuclei: over the model's median (20 px) but within what it
    learned (up to 40 px). The original size is tried beside the shrink, and kept unless the
    network was surer of the shrunk pass."""
    from napari_loopseg.core import segment as segment_module

    factors = []

    def fake_pass(predictor, plane, params, factor, base, n_planes):
        factors.append(factor)
        yield from ()
        if factor == 1.0:
            return _discs(15), unsure_as_is
        return _discs(15), 0.2  # the probe, and the pass shrunk to 20 / 30

    monkeypatch.setattr(segment_module, "_segment_plane", fake_pass)

    class Model:
        diameters = Diameters(median=20, low=10, high=40)

    factor, _ = drive(
        segment_module._estimate(None, np.zeros((512, 512), np.float32), None, Model(), 0.0, 1, "")
    )
    assert factors[:3] == [0.5, pytest.approx(20 / 30, rel=0.02), 1.0]
    assert factor == pytest.approx(expected, rel=0.02)


def test_uncertainty_is_lowest_for_decided_foreground():
    decided = np.stack([np.where(_discs(10) > 0, 0.97, 0.02)]).astype(np.float32)
    torn = np.stack([np.where(_discs(10) > 0, 0.6, 0.2)]).astype(np.float32)
    assert uncertainty(decided) == pytest.approx(0.03, abs=1e-6)
    assert uncertainty(torn) > 0.2 and uncertainty(np.zeros((1, 8, 8), np.float32)) == 0.5


def _ap50(truth: np.ndarray, labels: np.ndarray) -> float:
    counts = Counts()
    counts.add(truth, labels)
    return counts.ap(0.5)


def test_given_size_predicts_at_the_trained_scale_on_the_original_grid(steady_model_file):
    """Nuclei 3x larger than in training, given their size, give the objects the model finds at
    the trained scale, upsampled: rescaling in, maps back to the original grid, areas scaled.
    (A field of some 40 nuclei: one borderline nucleus that the resampling flips costs 0.05.)"""
    model = load_path(steady_model_file)
    image, _ = make_nuclei((256, 256), seed=3)
    big = np.kron(image, np.ones((3, 3), image.dtype))
    median = model.diameters.median
    native = segment(image, model=model, object_size=median, precision="fp32")
    rescued = segment(big, model=model, object_size=3 * median, precision="fp32")
    assert rescued.shape == big.shape and native.max() > 10
    assert _ap50(np.kron(native, np.ones((3, 3), native.dtype)), rescued) >= 0.9
    auto = segment(big, model=model, object_size="auto", precision="fp32")  # 3x: outside the range
    assert _ap50(rescued, auto) >= 0.9


def test_size_is_estimated_by_default_where_the_model_records_one(tiny_model, caplog):
    """One default for the widget, the command line and ``segment()``: the estimate; a model
    without recorded training sizes segments the image as it is, and says why."""
    image, _ = make_nuclei((160, 160), seed=3)
    big = np.kron(image, np.ones((3, 3), image.dtype))
    default = segment(big, model=tiny_model, precision="fp32")
    np.testing.assert_array_equal(
        default, segment(big, model=tiny_model, object_size="auto", precision="fp32")
    )
    as_is = segment(big, model=tiny_model, object_size=None, precision="fp32")
    assert _ap50(default, as_is) < 0.9  # the estimate rescaled this image: the two differ
    unsized = replace(tiny_model, card={k: v for k, v in tiny_model.card.items() if k != "object_diameters"})
    with caplog.at_level("WARNING"):
        np.testing.assert_array_equal(segment(big, model=unsized, precision="fp32"), as_is)
    assert "does not record its training object size" in caplog.text


def test_bad_sizes_are_named(tiny_model):
    image, _ = make_nuclei((64, 64), seed=1)
    for size, message in ((0, "must be positive"), ("big", "number of pixels or 'auto'")):
        with pytest.raises(InputError, match=message):
            segment(image, model="tiny", object_size=size)

import numpy as np
import pytest

from napari_loopseg.core.normalize import (
    InputError,
    Layout,
    Normalization,
    check_image,
    iter_planes,
    normalize_plane,
)


def test_percentiles_map_to_unit_range():
    plane = np.random.default_rng(0).integers(100, 4000, (64, 64)).astype(np.uint16)
    out = normalize_plane(plane, norm=Normalization(0, 100, "no"))
    assert out.dtype == np.float32
    assert out.min() == pytest.approx(0) and out.max() == pytest.approx(1)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.float32, np.float64])
def test_dtypes_give_the_same_mapping(dtype):
    base = np.random.default_rng(1).random((40, 40)) * 200
    out = normalize_plane(base.astype(dtype))
    ref = normalize_plane(base.astype(np.uint8))
    assert np.abs(out - ref).max() < 0.02


def test_bright_background_is_inverted():
    """Brightfield / H&E: dark nuclei on a bright background come out bright on dark."""
    plane = np.full((64, 64, 3), 230, np.uint8)
    plane[20:30, 20:30] = (80, 40, 120)  # a purple nucleus
    out = normalize_plane(plane, rgb=True)
    assert out[25, 25] > out[5, 5]
    assert normalize_plane(plane, rgb=True, norm=Normalization(invert="no"))[25, 25] < 0.5


def test_fluorescence_is_not_inverted():
    plane = np.full((64, 64), 10, np.uint16)
    plane[20:30, 20:30] = 3000
    out = normalize_plane(plane)
    assert out[25, 25] > out[5, 5]


def test_nan_does_not_propagate():
    plane = np.random.default_rng(0).random((32, 32)).astype(np.float32)
    plane[3, 3] = np.nan
    assert np.isfinite(normalize_plane(plane)).all()


@pytest.mark.parametrize(
    "array, layout, message",
    [
        (np.zeros((32, 32), complex), Layout(), "pixel type"),
        (np.zeros((2, 2)), Layout(), "too small"),
        (np.zeros(32), Layout(), "2 spatial"),
        (np.zeros((32, 32, 5)), Layout(rgb=True), "RGB"),
        (np.zeros((2, 32, 32)), Layout(channel_axis=0, channel=3), "channel 3"),
        (np.zeros((2, 32, 32)), Layout(channel_axis=5), "channel axis"),
    ],
)
def test_bad_input_is_named(array, layout, message):
    with pytest.raises(InputError, match=message):
        check_image(array, layout)
        list(iter_planes(array, layout))


def test_planes_of_stacks_channels_and_rgb():
    stack = np.zeros((3, 2, 20, 30))  # t, c, y, x
    layout = Layout(channel_axis=1, channel=1)
    assert check_image(stack, layout) == ((3,), (20, 30))
    assert [index for index, _ in iter_planes(stack, layout)] == [(0,), (1,), (2,)]
    rgb_stack = np.zeros((4, 20, 30, 3), np.uint8)
    planes = list(iter_planes(rgb_stack, Layout(rgb=True)))
    assert len(planes) == 4 and planes[0][1].shape == (20, 30, 3)


def _he_tile() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """White background, pink eosin-stained tissue, and a purple haematoxylin nucleus inside it."""
    plane = np.full((64, 64, 3), (245, 245, 245), np.uint8)
    plane[8:56, 8:56] = (230, 150, 200)  # eosin: cytoplasm
    plane[24:40, 24:40] = (90, 60, 160)  # haematoxylin: nucleus
    plane[44:52, 12:20] = (200, 120, 170)  # a darker, still eosin-coloured patch
    return plane, np.s_[30, 30], np.s_[48, 16]


def test_haematoxylin_input_tells_nuclei_from_eosin():
    """Stain colour, not darkness, marks nuclei: the deconvolved plane keeps the nucleus far above
    dark eosin, where luminance puts them close together."""
    plane, nucleus, eosin = _he_tile()
    stain = normalize_plane(plane, rgb=True, norm=Normalization(colour="haematoxylin"))
    grey = normalize_plane(plane, rgb=True)
    assert stain[nucleus] > 0.8 and stain[eosin] < 0.2 and stain[4, 4] < 0.1
    assert stain[nucleus] - stain[eosin] > grey[nucleus] - grey[eosin]


def test_haematoxylin_scaling_does_not_depend_on_the_pixel_type():
    plane, nucleus, _ = _he_tile()
    as_int = normalize_plane(plane, rgb=True, norm=Normalization(colour="haematoxylin"))
    as_float = normalize_plane(plane / 255.0, rgb=True, norm=Normalization(colour="haematoxylin"))
    wide = normalize_plane(plane.astype(np.uint16) * 257, rgb=True, norm=Normalization(colour="haematoxylin"))
    assert np.abs(as_int - as_float).max() < 1e-3 and np.abs(as_int - wide).max() < 1e-3


def test_cards_without_a_colour_keep_luminance_and_unknown_colours_are_refused():
    assert Normalization.from_dict({"low": 1, "high": 99.8}).colour == "luminance"
    assert Normalization.from_dict(Normalization(colour="haematoxylin").to_dict()).colour == "haematoxylin"
    with pytest.raises(ValueError, match="colour"):
        Normalization.from_dict({"colour": "eosin"})

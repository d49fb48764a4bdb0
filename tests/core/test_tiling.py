import numpy as np
import pytest
import torch

from napari_loopseg.core.predict import Predictor
from napari_loopseg.core.tiling import TilePlan
from napari_loopseg.core.unet import UNet, UNetConfig


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(1)
    model = UNet(UNetConfig(width=4, depth=3))
    for m in model.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
            torch.nn.init.kaiming_normal_(m.weight)  # signals carry far: seams would show
        if isinstance(m, torch.nn.BatchNorm2d):  # non-trivial normalisation statistics
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    return model.eval()


@pytest.mark.parametrize("shape", [(200, 333), (77, 50), (5, 9), (130, 16), (64, 64)])
def test_tiled_equals_whole_image(net, shape):
    """Sizes not divisible by 16, smaller than one tile, one tile wide: all match exactly."""
    image = np.random.default_rng(0).random(shape, dtype=np.float32)
    whole = Predictor(net, device="cpu", precision="fp32", tile_size=100_000).predict(image)
    tiled = Predictor(net, device="cpu", precision="fp32", tile_size=128, batch_size=3).predict(image)
    assert whole.shape == (3, *shape)
    np.testing.assert_allclose(tiled, whole, atol=1e-5)


def test_too_small_halo_shows_seams(net):
    """The equality above is not vacuous: a halo below the receptive field breaks it."""
    image = np.random.default_rng(0).random((200, 200), dtype=np.float32)
    whole = Predictor(net, device="cpu", precision="fp32", tile_size=100_000).predict(image)
    seamy = Predictor(net, device="cpu", precision="fp32", tile_size=64, halo=8).predict(image)
    assert np.abs(seamy - whole).max() > 1e-2


@pytest.mark.parametrize("shape", [(300, 130), (520, 700), (1000, 17)])
def test_plan_covers_every_pixel_once_with_a_halo_inside_each_tile(shape):
    halo, tile = 24, 128
    plan = TilePlan.make(shape, tile=tile, halo=halo, multiple=8)
    out = np.zeros((1, *shape), np.int32)
    for origin in plan.origins():
        region = np.zeros_like(out)
        plan.place(region, np.ones((1, *plan.tile_shape), np.int32), origin)
        out += region
        # a kept pixel is at least a halo from every tile edge that is not the image's edge
        ys, xs = np.nonzero(region[0])
        for kept, start, axis in ((ys, origin[0], plan.y), (xs, origin[1], plan.x)):
            assert start == 0 or kept.min() - start >= halo
            assert start + axis.tile == axis.padded or start + axis.tile - kept.max() > halo
    assert (out == 1).all()
    assert all(y % 8 == 0 and x % 8 == 0 for y, x in plan.origins())
    assert max(plan.tile_shape) <= tile


def test_tiles_are_not_padded_beyond_the_pooling_multiple():
    """The image edge is the network's edge: a 2048 px axis costs 3 tiles of 832, not of 1024."""
    plan = TilePlan.make((2048, 250), tile=1024, halo=112, multiple=16)
    assert plan.tile_shape == (832, 256) and len(plan) == 3


def test_large_tile_means_one_tile():
    plan = TilePlan.make((300, 130), tile=4096, halo=24, multiple=8)
    assert len(plan) == 1


def test_gpu_batch_follows_free_memory(net, monkeypatch):
    """The batch holds half the GPU's free memory by the activation estimate, 1 to 32 tiles."""
    predictor = Predictor(net, device="cpu", tile_size=512)
    assert predictor.batch_size == 1  # CPU: one tile at a time
    predictor.device, predictor.dtype = torch.device("cuda"), torch.bfloat16
    per_tile = 12 * net.config.width * 512**2 * 2
    for free, expected in ((10 * per_tile, 5), (per_tile, 1), (1000 * per_tile, 32)):
        monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device, free=free: (free, 2 * free))
        assert predictor._batch_for_free_memory() == expected

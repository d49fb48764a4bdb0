import pytest
import torch

from napari_loopseg.core.unet import UNet, UNetConfig, fused_for_inference, receptive_radius


@pytest.mark.parametrize("depth", [2, 3])
def test_receptive_radius_matches_autograd(depth):
    """The halo used for tiling must cover every input pixel an output pixel depends on."""
    config = UNetConfig(width=4, depth=depth)
    net = UNet(config).eval()
    for p in net.parameters():
        if p.dim() > 1:
            torch.nn.init.uniform_(p, 0.05, 0.1)  # positive weights: no accidental zero gradients
    reach = 0
    for offset in range(2**depth):  # every position relative to the pooling grid
        x = torch.rand(1, 1, 160, 160, requires_grad=True)
        centre = 64 + offset
        net(x)[0, 0, centre, centre].backward()
        ys, xs = torch.nonzero(x.grad[0, 0], as_tuple=True)
        reach = max(reach, int((ys - centre).abs().max()), int((xs - centre).abs().max()))
    assert reach == receptive_radius(config)


def test_output_shape_and_channels():
    net = UNet(UNetConfig(in_channels=2, out_channels=3, width=4, depth=2))
    assert net(torch.zeros(2, 2, 32, 48)).shape == (2, 3, 32, 48)
    assert net.multiple == 4


def test_config_rejects_nonsense():
    with pytest.raises(ValueError):
        UNetConfig.from_dict({"in_channels": 1, "out_channels": 3, "width": 4, "depth": 40})
    with pytest.raises(ValueError):
        UNetConfig.from_dict({"in_channels": 1, "width": 4, "depth": 2})


def test_fused_network_computes_the_same_maps_and_leaves_the_original_alone():
    torch.manual_seed(0)
    net = UNet(UNetConfig(width=4, depth=2))
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):  # statistics far from identity
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.2, 3.0)
            m.weight.data.uniform_(0.5, 2.0)
            m.bias.data.uniform_(-1, 1)
    net.train()
    fused = fused_for_inference(net)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    assert net.training and any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    x = torch.rand(2, 1, 32, 48)
    with torch.no_grad():
        expected = net.eval()(x)
        assert (expected - fused(x)).abs().max() < 1e-4
        assert (expected - UNet(net.config).eval()(x)).abs().max() > 1e-2  # the check can fail

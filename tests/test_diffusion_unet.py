"""3-D U-Net: shapes for several band counts, decoder features, receptive radius."""
import pytest
import torch

from bdgf_core.diffusion.pretrain import padded_bands
from bdgf_core.diffusion.unet import UNet3D

WIDTHS = (4, 8, 8, 16)


@pytest.mark.parametrize("n_bands", [3, 8, 13, 30])
def test_output_shape_equals_input(n_bands):
    torch.manual_seed(0)
    net = UNet3D(WIDTHS, time_dim=8)
    S = padded_bands(n_bands, net.band_multiple)
    assert S % 8 == 0 and S >= n_bands and S - n_bands < 8
    x = torch.randn(2, 1, S, 9, 7)
    out, feats = net(x, torch.tensor([1, 400]), return_features=True)
    assert out.shape == x.shape
    # decoder concatenations, deepest first: 2 * width channels at S/4, S/2, S bands
    assert [tuple(f.shape) for f in feats] == [(2, 16, S // 4, 9, 7), (2, 16, S // 2, 9, 7), (2, 8, S, 9, 7)]
    assert net.feature_channels == [16, 16, 8]
    assert all(torch.equal(a, b) for a, b in zip(feats, net.decoder_features(x, torch.tensor([1, 400]))))


def test_paper_widths_feature_sizes():
    """SpectralDiff: 104 bands give 3328 = C * S' values per pixel in every decoder layer."""
    net = UNet3D((16, 32, 64, 128), time_dim=32).eval()
    with torch.no_grad():
        feats = net.decoder_features(torch.zeros(1, 1, 104, 3, 3), torch.tensor([5]))
    assert [f.shape[1] * f.shape[2] for f in feats] == [3328, 3328, 3328]


def test_rejects_bad_band_count():
    with pytest.raises(ValueError):
        UNet3D(WIDTHS)(torch.zeros(1, 1, 12, 4, 4), torch.tensor([1]))


def test_time_embedding_changes_output():
    torch.manual_seed(0)
    net = UNet3D(WIDTHS, time_dim=8).eval()
    x = torch.randn(1, 1, 8, 5, 5)
    with torch.no_grad():
        assert not torch.allclose(net(x, torch.tensor([5])), net(x, torch.tensor([400])))


def test_receptive_radius_is_exact():
    """A change R + 1 pixels away leaves the features untouched; R pixels away it does not."""
    torch.manual_seed(0)
    net = UNet3D(WIDTHS, time_dim=8).eval()
    R = net.receptive_radius
    size = 2 * R + 5
    c = size // 2
    x = torch.randn(1, 1, 8, size, size)
    t = torch.tensor([10])
    with torch.no_grad():
        base = torch.cat([f[..., c, c].flatten() for f in net.decoder_features(x, t)])
        for dist, changes in ((R + 1, False), (R, True)):
            y = x.clone()
            y[..., c + dist, c] += 5.0
            f = torch.cat([f[..., c, c].flatten() for f in net.decoder_features(y, t)])
            assert (not torch.equal(f, base)) == changes

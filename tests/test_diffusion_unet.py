"""3-D U-Nets: shapes for several band counts, decoder features, receptive radius; SpectralDiff's
denoiser ('paper') against the architecture SpectralDiff published."""
import pytest
import torch

from bdgf_core.diffusion.pretrain import DiffusionConfig, padded_bands
from bdgf_core.diffusion.unet import SpectralDiffUNet, UNet3D, make_denoiser

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


@pytest.mark.parametrize("cls", [UNet3D, SpectralDiffUNet])
def test_receptive_radius_is_exact(cls):
    """A change R + 1 rows away leaves the features untouched; R rows away it does not."""
    torch.manual_seed(0)
    net = cls(WIDTHS, time_dim=8).eval()
    R = net.receptive_radius
    size = 2 * R + 5
    c = size // 2
    x = torch.randn(1, 1, 8, size, size)
    t = torch.tensor([10])
    with torch.no_grad():
        base = torch.cat([f[..., c, c].flatten() for f in net.decoder_features(x, t)])
        for dist, changes in ((R + 1, False), (R, True)):
            y = x.clone()
            y[..., c + dist, :] += 5.0  # a whole row: many paths, so ReLU cannot block them all
            f = torch.cat([f[..., c, c].flatten() for f in net.decoder_features(y, t)])
            assert (not torch.equal(f, base)) == changes


# SpectralDiff (Chen et al. 2023) trains ``SimpleUnet(_image_channels=1)`` on Pavia University
# (103 bands, zero-padded to 104 = spe in its train_unet.py), 64 x 64 tiles: widths 16-32-64-128,
# time embedding 32. Its parameter count, 4,299,633 (Table VII of the BDGF paper: 4.30 M), does not
# depend on the band count (the spectral axis is convolved, not a channel axis).
SPECTRALDIFF_PARAMETERS = 4_299_633


@pytest.mark.parametrize("bands", [104, 64, 200])
def test_paper_denoiser_is_spectraldiffs(bands):
    net = make_denoiser(DiffusionConfig.from_profile("paper").architecture, (16, 32, 64, 128), 32)
    assert isinstance(net, SpectralDiffUNet)
    assert sum(p.numel() for p in net.parameters()) == SPECTRALDIFF_PARAMETERS
    # two 3x3x3 convolutions per block, the time embedding between them
    assert [type(m).__name__ for m in net.downs[0].children()][:5] == ["Conv3d", "BatchNorm3d", "Linear",
                                                                        "Conv3d", "BatchNorm3d"]
    with torch.no_grad():
        out, feats = net.eval()(torch.zeros(1, 1, bands, 3, 3), torch.tensor([5]), return_features=True)
    assert out.shape == (1, 1, bands, 3, 3)
    # the skips are taken after the spectral downsampling: 256, 128, 64 channels at S/8, S/4, S/2
    assert [tuple(f.shape[1:3]) for f in feats] == [(256, bands // 8), (128, bands // 4), (64, bands // 2)]
    assert net.feature_channels == [256, 128, 64] and net.feature_strides == [8, 4, 2]


def test_spectraldiff_features_per_layer_for_104_bands():
    """SpectralDiff's stitched features: C x S' = 3328 values per pixel in every decoder layer for 104 bands."""
    net = SpectralDiffUNet().eval()
    with torch.no_grad():
        feats = net.decoder_features(torch.zeros(1, 1, 104, 3, 3), torch.tensor([5]))
    assert [f.shape[1] * f.shape[2] for f in feats] == [3328, 3328, 3328]
    with torch.no_grad():
        assert len(net.decoder_features(torch.zeros(1, 1, 104, 3, 3), torch.tensor([5]), depth=1)) == 1


def test_unknown_architecture_is_refused():
    with pytest.raises(ValueError, match="unknown denoiser architecture 'resnet'"):
        make_denoiser("resnet", (4, 8), 8)

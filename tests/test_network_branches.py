"""Shapes and gradient flow of the three branches (eqs. 11-24)."""
from __future__ import annotations

import pytest
import torch

from bdgf_core.network.cnn import CNNBranch
from bdgf_core.network.mamba import BandMamba, ChannelAttention, MambaBranch
from bdgf_core.network.transformer import SpatialTokenizer, TransformerBranch

E = 16  # small embedding keeps the tests fast; the shapes do not depend on it


def _x(n: int, bands: int, p: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, bands, p, p, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("p", [9, 1])
@pytest.mark.parametrize("bands", [5, 30, 64])
def test_branch_output_shapes(bands: int, p: int) -> None:
    torch.manual_seed(0)
    spec, sar, dif = _x(4, bands, p), _x(4, 2, p, 1), _x(4, 7, p, 2)
    cmap, cvec = CNNBranch(bands, 2, 7, E)(spec, sar, dif)
    assert cmap.shape == (4, E, p, p) and cvec.shape == (4, E)
    assert TransformerBranch(bands, 2, 7, p, E)(spec, sar, dif).shape == (4, E)
    mmap, mvec = MambaBranch(bands, 2, 7, p, E, guide=True, with_cnn=True)(spec, sar, dif, cmap)
    assert mmap.shape == (4, E, p, p) and mvec.shape == (4, E)
    assert BandMamba(p, E)(spec).shape == spec.shape  # eq. 20 keeps (bands, p, p)
    assert torch.isfinite(mvec).all() and torch.isfinite(cvec).all()


def test_cnn_scalars_get_gradients_and_follow_eq11() -> None:
    torch.manual_seed(0)
    net = CNNBranch(6, 2, 3, E)
    spec, sar, dif = _x(4, 6, 5), _x(4, 2, 5, 1), _x(4, 3, 5, 2)
    net(spec, sar, dif)[1].pow(2).sum().backward()
    for name in ("alpha", "beta", "gamma"):
        g = getattr(net, name).grad
        assert g is not None and g.abs() > 0, name
    # beta = 1 removes the diffusion term of the first line of eq. 11: f_dif no longer matters
    # there, and with gamma = alpha = 1 nowhere.
    with torch.no_grad():
        net.alpha.fill_(1.0), net.beta.fill_(1.0), net.gamma.fill_(1.0)
    net.eval()
    torch.testing.assert_close(net(spec, sar, dif)[1], net(spec, sar, dif * 5 + 3)[1])


def test_guidance_off_drops_diffusion_terms() -> None:
    cnn = CNNBranch(6, 2, 3, E, guide=False)
    assert not hasattr(cnn, "alpha") and not any("2d" in n and n.startswith(("w1_2d", "w2_2d", "w3_2d"))
                                                 for n, _ in cnn.named_parameters())
    spec, sar = _x(2, 6, 3), _x(2, 2, 3, 1)
    assert cnn(spec, sar, None)[1].shape == (2, E)
    assert TransformerBranch(6, 2, 3, 3, E, guide=False)(spec, sar, None).shape == (2, E)
    mb = MambaBranch(6, 2, 3, 3, E, guide=False, with_cnn=False)
    assert mb.w11.in_channels == E  # the group has only the spectral member
    assert mb(spec, sar, None, None)[1].shape == (2, E)


def test_transformer_uses_diffusion_features() -> None:
    torch.manual_seed(0)
    net = TransformerBranch(6, 2, 3, 5, E).eval()
    spec, sar, dif = _x(2, 6, 5), _x(2, 2, 5, 1), _x(2, 3, 5, 2)
    assert not torch.allclose(net(spec, sar, dif), net(spec, sar, dif + 1))


def test_spatial_tokenizer_weights_sum_to_one_over_pixels() -> None:
    tok = SpatialTokenizer(3, E, tokens=4)
    x = torch.ones(2, 3, 5, 5)  # identical pixels: every token equals one pixel's mapping
    out = tok(x)
    assert out.shape == (2, 4, E)
    torch.testing.assert_close(out, (torch.ones(1, 3) @ tok.w_map).expand(2, 4, E))


def test_channel_attention_lambda_and_shape() -> None:
    ca = ChannelAttention(5, 8)
    f = _x(3, 5, 4)
    out = ca(f)
    assert out.shape == (3, 8, 4, 4)
    torch.testing.assert_close(out, ca.v(f))  # lambda starts at 0: f_CA = V (eq. 23)
    out.pow(2).sum().backward()
    assert ca.lam.grad is not None and ca.lam.grad.abs() > 0


def test_mamba_branch_uses_cnn_features_when_given() -> None:
    torch.manual_seed(0)
    mb = MambaBranch(6, 2, 3, 3, E, guide=True, with_cnn=True).eval()
    with torch.no_grad():
        for ca in (mb.ca_spec, mb.ca_dif, mb.ca_cnn):
            ca.lam.fill_(0.5)
    spec, sar, dif, cmap = _x(2, 6, 3), _x(2, 2, 3, 1), _x(2, 3, 3, 2), _x(2, E, 3, 3)
    assert not torch.allclose(mb(spec, sar, dif, cmap)[1], mb(spec, sar, dif, cmap + 1)[1])
    assert not torch.allclose(mb(spec, sar, dif, cmap)[1], mb(spec, sar, dif + 1, cmap)[1])

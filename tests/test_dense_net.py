"""The opt-in fast paths without GDAL (run by scripts/gpu_check.sh, on CUDA there): the student's dense pass is
its per-patch function, and bf16 changes the exact path's probabilities only a little."""
import numpy as np
import pytest
import torch

from bdgf_core.bdgf_model import BDGFPredictor
from bdgf_core.network.bdgf import BDGFConfig, BDGFNet
from bdgf_core.network.student import StudentNet
from bdgf_core.patchconv import patches
from bdgf_core.student import predict_dense

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _perturb_bn(net):
    with torch.no_grad():  # BatchNorm statistics away from identity, so that they matter
        for m in net.modules():
            if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)):
                m.running_mean.normal_(0, 0.3)
                m.running_var.uniform_(0.5, 2.0)


@pytest.mark.parametrize("patch", [1, 3, 5, 9])
def test_student_dense_equals_student_per_patch(patch):
    """The student on a whole block (in tiles, and their edges) is the same function as on each pixel's patch."""
    torch.manual_seed(patch)
    net = StudentNet(7, 4, patch, width=8).eval()
    _perturb_bn(net)
    net.to(DEVICE)
    x = torch.randn(7, 13 + patch - 1, 10 + patch - 1, device=DEVICE)
    got = predict_dense(net, x, patch, tile=4)
    with torch.no_grad():
        want = torch.softmax(net(patches(x, patch))[:, :, 0, 0], 1).T.reshape(4, 13, 10).cpu().numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_student_receptive_field_is_the_patch():
    """A change outside a pixel's p x p patch leaves its output alone; one on the patch's corner does not."""
    torch.manual_seed(0)
    net = StudentNet(3, 2, 5, width=8).eval()
    x = torch.randn(3, 9, 9)
    base = predict_dense(net, x, 5)  # 5 x 5 outputs
    y = x.clone()
    y[:, 8, 8] += 5.0  # inside the patch of output (4, 4) only (its bottom-right corner)
    moved = np.abs(predict_dense(net, y, 5) - base).max(0)
    assert moved[4, 4] > 0 and moved[:4].max() == 0 and moved[:, :4].max() == 0


def test_bf16_is_close_to_fp32_but_not_the_same():
    torch.manual_seed(1)
    net = BDGFNet(5, 2, 3, 3, BDGFConfig(patch=5, embed=16, tokens=2)).eval().to(DEVICE)
    stats = {"spectral_mean": np.zeros(5, np.float32), "spectral_std": np.ones(5, np.float32),
             "sar_mean": np.zeros(2, np.float32), "sar_std": np.ones(2, np.float32)}
    pred = BDGFPredictor(net, stats, [2, 5, 9])
    rng = np.random.default_rng(0)
    blocks = [rng.normal(size=(c, 14, 15)).astype(np.float32) for c in (5, 2, 3)]
    exact = pred.predict_block(*blocks)
    pred.precision = "bf16"
    fast = pred.predict_block(*blocks)
    diff = np.abs(fast - exact).max()
    if DEVICE == "cpu":  # on CUDA both run under bf16 autocast (classify's default there)
        assert 0 < diff < 0.05
    else:
        assert diff < 1e-6

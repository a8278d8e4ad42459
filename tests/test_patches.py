import numpy as np
import pytest

from bdgf_core.patches import extract_patches, pad_reflect


def test_patches_match_padded_windows_at_borders():
    img = np.arange(2 * 6 * 7, dtype=np.float32).reshape(2, 6, 7)
    p = pad_reflect(img, 5)
    rows, cols = np.array([0, 5, 2, 0]), np.array([0, 6, 3, 6])
    got = extract_patches(p, rows, cols, 5)
    assert got.shape == (4, 2, 5, 5)
    ref = np.pad(img, ((0, 0), (2, 2), (2, 2)), mode="reflect")
    for k, (r, c) in enumerate(zip(rows, cols)):
        np.testing.assert_array_equal(got[k], ref[:, r:r + 5, c:c + 5])
    # the centre is the pixel itself, and reflection mirrors row 1 above row 0
    np.testing.assert_array_equal(got[0, :, 2, 2], img[:, 0, 0])
    np.testing.assert_array_equal(got[0, :, 1, 2], img[:, 1, 0])


def test_patch_size_one_is_the_pixel():
    img = np.random.default_rng(0).random((3, 4, 4)).astype(np.float32)
    got = extract_patches(pad_reflect(img, 1), np.array([1, 3]), np.array([2, 0]), 1)
    np.testing.assert_array_equal(got[:, :, 0, 0], img[:, [1, 3], [2, 0]].T)


@pytest.mark.parametrize("size", [0, 2, -3])
def test_bad_patch_sizes(size):
    with pytest.raises(ValueError, match="odd"):
        pad_reflect(np.zeros((1, 4, 4)), size)

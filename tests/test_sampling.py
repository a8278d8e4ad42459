import numpy as np
import pytest
from scipy.io import loadmat

from bdgf_core.errors import BdgfError
from bdgf_core.groundtruth import ClassInfo, GroundTruth
from bdgf_core.sampling import split_samples
from conftest import shared_data


def _gt(labels):
    from scipy import ndimage

    regions = np.zeros_like(labels)
    off = 0
    for c in np.unique(labels[labels > 0]):
        comp, n = ndimage.label(labels == c)
        regions[comp > 0] = comp[comp > 0] + off
        off += n
    return GroundTruth(labels.astype(np.int32), regions.astype(np.int32),
                       [ClassInfo(int(c), f"c{c}", "#000000") for c in np.unique(labels[labels > 0])])


def _blocks_scene():
    lab = np.zeros((60, 60), np.int32)
    for i, (r, c) in enumerate([(0, 0), (0, 30), (30, 0), (30, 30)]):
        lab[r + 2:r + 14, c + 2:c + 14] = 1
        lab[r + 16:r + 28, c + 16:c + 28] = 2
    return _gt(lab)


def test_pixel_split_counts_and_seed():
    gt = _blocks_scene()
    a = split_samples(gt, 20, "pixels", seed=1)
    b = split_samples(gt, 20, "pixels", seed=1)
    c = split_samples(gt, 20, "pixels", seed=2)
    lab = gt.labels.ravel()
    assert np.array_equal(a.train, b.train) and not np.array_equal(a.train, c.train)
    assert [(lab[a.train] == k).sum() for k in (1, 2)] == [20, 20]
    assert np.intersect1d(a.train, a.test).size == 0
    assert a.train.size + a.test.size == (lab > 0).sum()


def test_small_class_keeps_a_test_share_and_warns():
    lab = np.zeros((20, 20), np.int32)
    lab[:10] = 1
    lab[15, :10] = 2  # 10 pixels only
    sp = split_samples(_gt(lab), 30, "pixels", seed=0)
    l = lab.ravel()
    assert (l[sp.train] == 2).sum() == 7 and (l[sp.test] == 2).sum() == 3
    assert any("'c2'" in w and "fewer" in w for w in sp.warnings)


def test_polygon_split_never_tests_inside_a_training_polygon():
    gt = _blocks_scene()
    sp = split_samples(gt, 50, "polygons", seed=0, validation_share=0.3)
    reg = gt.regions.ravel()
    train_regions = set(reg[sp.train]) | set(reg[sp.val])
    assert not set(reg[sp.test]) & train_regions
    assert not set(reg[sp.val]) & set(reg[sp.train])
    assert sp.summary["classes"]["1"]["test_polygons"] >= 1


def test_single_polygon_class_falls_back_and_names_the_class():
    lab = np.zeros((30, 30), np.int32)
    lab[0:5, 0:5] = 1
    lab[10:15, 10:15] = 1
    lab[20:28, 20:28] = 2
    sp = split_samples(_gt(lab), 10, "polygons", seed=0)
    assert any("'c2'" in w and "single polygon" in w for w in sp.warnings)
    assert ((lab.ravel()[sp.test]) == 2).sum() > 0


def test_block_split_shares_no_block():
    gt = _blocks_scene()
    sp = split_samples(gt, 40, "blocks", seed=0, block_size=15)
    w = gt.labels.shape[1]
    blk = lambda idx: set(((idx // w) // 15 * 100 + (idx % w) // 15).tolist())  # noqa: E731
    assert not blk(sp.train) & blk(sp.test)


def test_bad_parameters_are_refused():
    gt = _blocks_scene()
    with pytest.raises(BdgfError, match="positive"):
        split_samples(gt, 0)
    with pytest.raises(BdgfError, match="unknown split"):
        split_samples(gt, 5, "random")
    with pytest.raises(BdgfError, match="validation share"):
        split_samples(gt, 5, validation_share=1.5)


def test_class_outside_valid_area_is_refused():
    gt = _blocks_scene()
    valid = gt.labels != 2
    with pytest.raises(BdgfError, match="'c2'.*no labelled pixel"):
        split_samples(gt, 5, valid=valid)


def test_augsburg_real_labels_per_class_counts():
    """The paper's Augsburg labels: 7 classes, class 6 small; 100 per class as in the paper."""
    train = loadmat(shared_data("augsburg", "TrainImage.mat"))["TrainImage"]
    test = loadmat(shared_data("augsburg", "TestImage.mat"))["TestImage"].astype(np.int32)
    labels = np.where(train > 0, train, test).astype(np.int32)
    assert (labels > 0).sum() == 78294
    gt = _gt(labels)
    sp = split_samples(gt, 100, "pixels", seed=0)
    counts = np.bincount(labels.ravel()[sp.train], minlength=8)[1:]
    assert counts.tolist() == [100] * 7
    assert sp.train.size + sp.test.size == 78294


def test_trento_real_labels_polygon_split():
    lab = loadmat(shared_data("trento", "allgrd.mat"))["mask_test"].astype(np.int32)
    gt = _gt(lab)
    sp = split_samples(gt, 50, "polygons", seed=0)
    reg, l = gt.regions.ravel(), lab.ravel()
    fallback = {int(c) for c, v in sp.summary["classes"].items() if v.get("fallback")}
    assert fallback == {c for c in range(1, 7) if len(np.unique(reg[l == c])) == 1}
    for c in set(range(1, 7)) - fallback:
        assert not set(reg[sp.test][l[sp.test] == c]) & set(reg[sp.train][l[sp.train] == c])
    assert len(np.unique(lab[lab > 0])) == 6
    assert (np.bincount(lab.ravel()[sp.train]) [1:] <= 50).all()

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
    assert sp.val.size and not np.intersect1d(sp.val, sp.train).size
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
    w, lab = gt.labels.shape[1], gt.labels.ravel()
    blk = lambda idx: set(((idx // w) // 15 * 100 + (idx % w) // 15).tolist())  # noqa: E731
    checked = 0
    for seed in range(4):  # a class in 4 blocks may fall back to pixels (all on one side): only the others count
        sp = split_samples(gt, 40, "blocks", seed=seed, block_size=15)
        spatial = [c for c in (1, 2) if "fallback" not in sp.summary["classes"][str(c)]]
        tr, te = (x[np.isin(lab[x], spatial)] for x in (sp.train, sp.test))
        assert not blk(tr) & blk(te)
        checked += len(spatial)
    assert checked >= 4


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


# --- blocks: whole blocks on one side for every class, validation included ---------------------

def _block_ids(idx, w, size):
    return set(((idx // w) // size * 1000 + (idx % w) // size).tolist())


def test_block_split_validation_blocks_are_whole_and_shared_by_no_class():
    gt = _blocks_scene()
    w = gt.labels.shape[1]
    sp = split_samples(gt, 1000, "blocks", seed=3, block_size=10, validation_share=0.4)
    tr, va, te = (_block_ids(x, w, 10) for x in (sp.train, sp.val, sp.test))
    assert sp.val.size and sp.test.size and sp.train.size
    assert not tr & va and not tr & te and not va & te
    c1 = sp.summary["classes"]["1"]
    assert {"train_blocks", "validation_blocks", "test_blocks"} <= set(c1)
    assert c1["validation_blocks"] >= 1 and c1["test_blocks"] >= 1


def test_block_split_class_in_one_block_falls_back_and_is_named():
    lab = np.zeros((40, 40), np.int32)
    lab[:, :20] = 1
    lab[:, 20:] = 2
    lab[2:5, 2:5] = 3  # all of class 3 lies in one 10-pixel block
    gt = _gt(lab)
    sp = split_samples(gt, 5, "blocks", seed=0, block_size=10)
    assert any("'c3'" in w and "random pixel split for this class only" in w for w in sp.warnings)
    assert sp.summary["classes"]["3"]["fallback"] == "pixels"
    l = lab.ravel()
    assert (l[sp.train] == 3).sum() > 0 and (l[sp.test] == 3).sum() > 0
    assert not any("'c1'" in w for w in sp.warnings)


# --- polygons: counts per side, seeds ----------------------------------------------------------

def test_polygon_split_reports_regions_and_pixels_per_side_and_is_seeded():
    gt = _blocks_scene()
    a = split_samples(gt, 30, "polygons", seed=5, validation_share=0.3)
    b = split_samples(gt, 30, "polygons", seed=5, validation_share=0.3)
    assert np.array_equal(a.train, b.train) and np.array_equal(a.test, b.test) and np.array_equal(a.val, b.val)
    reg, lab = gt.regions.ravel(), gt.labels.ravel()
    for code in ("1", "2"):
        v = a.summary["classes"][code]
        c = int(code)
        assert v["test_polygons"] == len(set(reg[a.test][lab[a.test] == c]))
        assert v["validation_polygons"] == len(set(reg[a.val][lab[a.val] == c]))
        # validation blocks are cut out of training regions, which all keep training pixels
        assert v["train_polygons"] + v["test_polygons"] == 4 and v["validation_polygons"] <= v["train_polygons"]
        assert v["train"] == 30 and v["test"] == int((lab[a.test] == c).sum())
    assert a.summary["strategy"] == "polygons" and a.summary["seed"] == 5
    seeds = {tuple(split_samples(gt, 30, "polygons", seed=s).test[:5]) for s in range(6)}
    assert len(seeds) > 1


def test_pixel_split_is_labelled_as_the_papers():
    sp = split_samples(_blocks_scene(), 10, "pixels", seed=0, validation_share=0.2)
    assert sp.summary["strategy"] == "pixels" and sp.strategy == "pixels"
    assert sp.val.size and not np.intersect1d(sp.val, sp.train).size and not np.intersect1d(sp.val, sp.test).size


# --- the same test pixels for every model; a validation set that cannot wreck training ----------

@pytest.mark.parametrize("strategy", ["polygons", "blocks"])
def test_test_pixels_do_not_depend_on_the_validation_share_or_the_samples(strategy):
    """Issue 17: the forest (no validation) and BDGF (validation 0.1) of one seed tested different pixels."""
    gt = _blocks_scene()
    ref = split_samples(gt, 20, strategy, seed=4, block_size=10)
    for share, n in ((0.1, 20), (0.3, 20), (0.0, 35), (0.2, 5)):
        sp = split_samples(gt, n, strategy, seed=4, block_size=10, validation_share=share)
        assert np.array_equal(sp.test, ref.test), (share, n)


def test_pixel_split_test_pixels_do_not_depend_on_the_samples_beyond_the_training_ones():
    gt = _blocks_scene()
    a = split_samples(gt, 20, "pixels", seed=2, validation_share=0.1)
    b = split_samples(gt, 20, "pixels", seed=2, validation_share=0.1)
    assert np.array_equal(a.test, b.test)
    c = split_samples(gt, 20, "pixels", seed=2)
    # the same training pixels; without validation, the validation pixels are tested too
    assert np.array_equal(a.train, c.train) and np.array_equal(np.union1d(a.test, a.val), c.test)


def _dominant_region_raster():
    """Class 1: one 40 x 40 region (1600 px) and six 4 x 4 ones; class 2 the same, elsewhere."""
    lab = np.zeros((100, 100), np.int32)
    lab[2:42, 2:42] = 1
    lab[52:92, 52:92] = 2
    for k in range(6):
        lab[50 + 8 * k:54 + 8 * k, 2:6] = 1
        lab[2 + 8 * k:6 + 8 * k, 52:56] = 2
    return _gt(lab)


def test_validation_never_takes_a_dominant_region_whole():
    """Issue 15: the validation share took a class's largest region whole, leaving training the leftovers."""
    gt = _dominant_region_raster()
    lab, reg = gt.labels.ravel(), gt.regions.ravel()
    dominant_checked: list[int] = []
    for seed in range(8):
        _check_dominant(gt, lab, reg, seed, dominant_checked)
    assert len(dominant_checked) >= 2


def _check_dominant(gt, lab, reg, seed, dominant_checked):
    sp = split_samples(gt, 50, "polygons", seed=seed, validation_share=0.1)
    no_val = split_samples(gt, 50, "polygons", seed=seed)
    assert np.array_equal(sp.test, no_val.test)
    for c in (1, 2):
        pool = np.setdiff1d(np.flatnonzero(lab == c), sp.test)  # the training side
        val = sp.val[lab[sp.val] == c]
        train = sp.train[lab[sp.train] == c]
        # a share of the pixels, not a region: 10 % of the training side, within a block's worth
        assert abs(val.size - 0.1 * pool.size) <= max(0.05 * pool.size, 2), (c, val.size, pool.size)
        # every region of the training side keeps training pixels, the dominant one most of its own
        kept = np.setdiff1d(pool, val)
        assert set(reg[pool]) == set(reg[kept])
        big = np.bincount(reg[pool]).argmax()
        if (reg[pool] == big).sum() > pool.size / 2:  # the dominant region is on the training side
            assert (reg[kept] == big).sum() >= 0.8 * (reg[pool] == big).sum()
            dominant_checked.append(seed)
        assert train.size == min(50, kept.size) and not np.intersect1d(train, val).size


def test_fixed_split_validation_never_takes_a_dominant_region_whole():
    from bdgf_core.sampling import split_fixed

    gt = _dominant_region_raster()
    empty = GroundTruth(np.zeros_like(gt.labels), np.zeros_like(gt.regions), gt.classes)
    test = GroundTruth(np.where(gt.labels == 0, 0, 0).astype(np.int32), empty.regions, gt.classes)
    test.labels[95:, :] = 1
    test.labels[95:, 50:] = 2
    test.regions[95:, :50], test.regions[95:, 50:] = 1, 2
    lab, reg = gt.labels.ravel(), gt.regions.ravel()
    for seed in range(4):
        sp = split_fixed(gt, test, 50, "polygons", seed=seed, validation_share=0.1)
        for c in (1, 2):
            pool = np.flatnonzero(lab == c)
            val = sp.val[lab[sp.val] == c]
            assert abs(val.size - 0.1 * pool.size) <= 0.05 * pool.size
            assert set(reg[np.setdiff1d(pool, val)]) == set(reg[pool])


# --- fixed training and test layers -------------------------------------------------------------

def _fixed_pair():
    train = np.zeros((30, 30), np.int32)
    test = np.zeros((30, 30), np.int32)
    for k, r in enumerate((0, 6, 12)):
        train[r:r + 4, 0:4] = 1
        train[r:r + 4, 10:14] = 2
        test[r:r + 4, 20:24] = 1 if k else 2
    test[25:28, 0:3] = 3            # a class the training layer lacks
    test[0:2, 0:2] = 2              # overlaps the training layer
    return _gt(train), _gt(test)


def test_fixed_split_trains_on_the_training_layer_and_tests_on_the_test_layer():
    from bdgf_core.groundtruth import merge_fixed
    from bdgf_core.sampling import split_fixed

    tr, te = _fixed_pair()
    sp = split_fixed(tr, te, 10, "polygons", seed=1, validation_share=0.34)
    trl, tel = tr.labels.ravel(), te.labels.ravel()
    assert (trl[sp.train] > 0).all() and (trl[sp.val] > 0).all()
    # test pixels: every test-layer pixel of a known class, less the overlap
    expected = np.flatnonzero((tel > 0) & (tel != 3) & (trl == 0))
    assert np.array_equal(sp.test, expected)
    assert any("4 pixels are labelled in both" in w for w in sp.warnings)
    assert any("'c3'" in w and "not in the training layer" in w for w in sp.warnings)
    assert [(trl[sp.train] == c).sum() for c in (1, 2)] == [10, 10]
    # validation: blocks of the training polygons, no pixel shared with training, every polygon still training
    assert sp.val.size and not np.intersect1d(sp.val, sp.train).size
    s = sp.summary
    assert s["strategy"] == "fixed" and s["validation_strategy"] == "polygons" and s["seed"] == 1
    assert s["classes"]["1"]["test_polygons"] == 2 and s["classes"]["2"]["test_polygons"] == 1
    assert s["classes"]["1"]["train_polygons"] == 3
    merged = merge_fixed(tr, te)
    assert np.array_equal(merged.labels.ravel()[sp.test], tel[sp.test])
    assert np.array_equal(merged.labels.ravel()[sp.train], trl[sp.train])
    assert (merged.labels == 3).sum() == 0


def test_fixed_split_uses_the_whole_training_layer_when_asked_and_warns_when_short():
    from bdgf_core.sampling import split_fixed

    tr, te = _fixed_pair()
    for strategy in ("pixels", "blocks", "polygons"):
        sp = split_fixed(tr, te, 1000, strategy, seed=0, block_size=5)
        assert sp.train.size == (tr.labels > 0).sum() and sp.val.size == 0
        assert any("fewer than the 1000 requested" in w for w in sp.warnings)
    sp = split_fixed(tr, te, 1000, "blocks", seed=0, block_size=5, validation_share=0.5)
    w = tr.labels.shape[1]
    assert sp.val.size and not _block_ids(sp.val, w, 5) & _block_ids(sp.train, w, 5)


def test_augsburg_official_split_as_fixed_layers():
    """The paper's Augsburg TrainImage / TestImage as a fixed split: 761 / 77533 pixels, 7 classes."""
    from bdgf_core.sampling import split_fixed

    train = loadmat(shared_data("augsburg", "TrainImage.mat"))["TrainImage"].astype(np.int32)
    test = loadmat(shared_data("augsburg", "TestImage.mat"))["TestImage"].astype(np.int32)
    sp = split_fixed(_gt(train), _gt(test), 10000, "pixels", seed=0)
    assert sp.train.size == 761 and sp.test.size == 77533 and not sp.val.size
    assert sorted(sp.summary["classes"]) == [str(c) for c in range(1, 8)]
    assert sp.summary["classes"]["6"]["train"] == 7
    sp = split_fixed(_gt(train), _gt(test), 100, "polygons", seed=0, validation_share=0.2)
    counts = np.bincount(train.ravel()[sp.train], minlength=8)[1:]
    assert (counts <= 100).all() and sp.test.size == 77533
    assert any("'c6'" in w for w in sp.warnings)


# --- polygons: the test side never leaves training a sliver ---------------------------------------

class _Order:
    """A generator stand-in whose permutation is scripted."""

    def __init__(self, order):
        self.order = np.asarray(order)

    def permutation(self, n):
        assert n == self.order.size
        return self.order


def test_test_regions_never_leave_training_a_sliver_of_the_class():
    """Hard scene, seed 4: regions of 526 and 390 pixels went to test, then the 1538-pixel region
    overshot the 1227-pixel target and left the 1-pixel region alone for training."""
    from bdgf_core.sampling import _whole_units

    ids, sizes = np.array([10, 11, 12, 13]), np.array([1538, 526, 390, 1])
    held = _whole_units(ids, sizes, 0.5 * sizes.sum(), _Order([1, 2, 0, 3]))
    assert set(held) == {11, 12, 13}  # the 1538 region is skipped: training keeps it
    # the order that reaches the target first is unchanged
    assert _whole_units(ids, sizes, 0.5 * sizes.sum(), _Order([0, 1, 2, 3])) == [10]
    # when every region would leave training less than half its share, the smallest is the test side
    assert _whole_units(np.array([1, 2]), np.array([3000, 10]), 1505, _Order([0, 1])) == [2]


def test_polygon_split_keeps_half_the_training_share_whatever_the_seed():
    lab = np.zeros((60, 100), np.int32)
    lab[0:39, 0:39] = 1     # 1521 pixels
    lab[45:58, 0:40] = 1    # 520
    lab[0:20, 45:65] = 1    # 400
    lab[50, 99] = 1         # 1
    lab[25:45, 45:95] = 2
    lab[50:59, 45:95] = 2
    gt = _gt(lab)
    total = int((lab == 1).sum())
    for seed in range(40):
        sp = split_samples(gt, 50, "polygons", seed=seed)
        train_side = total - int((lab.ravel()[sp.test] == 1).sum())
        assert train_side >= total / 4, (seed, train_side)
        assert (lab.ravel()[sp.train] == 1).sum() == 50


def test_split_fingerprint_names_the_split():
    gt = _blocks_scene()
    a, b = split_samples(gt, 20, "polygons", seed=3), split_samples(gt, 20, "polygons", seed=3)
    assert a.fingerprint == b.fingerprint == a.summary["fingerprint"] and len(a.fingerprint) == 12
    others = {split_samples(gt, 20, "polygons", seed=s).fingerprint for s in range(4, 9)}
    assert a.fingerprint not in others
    assert split_samples(gt, 20, "polygons", seed=3, validation_share=0.2).fingerprint != a.fingerprint

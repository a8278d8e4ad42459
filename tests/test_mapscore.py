"""Whole-map scoring: boundary and interior pixels on hand-made maps with known edge errors."""
import numpy as np
import pytest

from bdgf_core.errors import BdgfError
from bdgf_core.mapscore import boundary_mask, disk, is_full_reference, score_map


def _halves():
    ref = np.ones((10, 10), np.int32)
    ref[:, 5:] = 2  # the class edge runs between columns 4 and 5
    return ref


def test_boundary_pixels_are_those_within_two_pixels_of_another_class():
    edge = boundary_mask(_halves())
    # columns 3 and 4 are 2 and 1 px from class 2's column 5; columns 5 and 6 likewise from column 4
    assert edge[:, 3:7].all() and not edge[:, :3].any() and not edge[:, 7:].any()


def test_boundary_distance_is_euclidean_between_pixel_centres():
    ref = np.ones((11, 11), np.int32)
    ref[5, 5] = 3  # a one-pixel island
    edge = boundary_mask(ref)
    rows, cols = np.nonzero(edge)
    d2 = (rows - 5) ** 2 + (cols - 5) ** 2
    assert edge.sum() == 13 and d2.max() == 4  # (1, 1) is sqrt(2) away and counts; (2, 1) is sqrt(5) and does not
    assert not edge[7, 6] and edge[6, 6] and edge[7, 5]
    assert disk(2).sum() == 13 and disk(1).sum() == 5


def test_unlabelled_pixels_and_the_image_edge_are_no_class_edge():
    ref = np.ones((9, 9), np.int32)
    ref[4, :] = 0  # an unlabelled line: not another class
    assert not boundary_mask(ref).any()
    ref[8, 8] = 2
    edge = boundary_mask(ref)
    assert edge[8, 8] and edge[6, 8] and edge[7, 7] and not edge[5, 8] and not edge[4, 8]


def test_score_map_counts_edge_errors_apart_from_interior_errors():
    ref = _halves()
    pred = ref.copy()
    pred[0:5, 4] = 2      # 5 errors on class 1's boundary column
    pred[0, 0] = 2        # 1 interior error
    pred = pred.astype(np.float32)
    pred[9, 9] = np.nan   # unclassified: left out
    s = score_map(ref, pred)
    assert s.all.confusion.sum() == 99 and s.all.oa == pytest.approx(93 / 99 * 100)
    assert s.boundary.confusion.sum() == 40 and s.boundary.oa == pytest.approx(35 / 40 * 100)
    assert s.interior.confusion.sum() == 59 and s.interior.oa == pytest.approx(58 / 59 * 100)
    # per class on the boundary: class 1 lost 5 of its 20 boundary pixels, class 2 none
    assert s.boundary.producers == pytest.approx([75.0, 100.0])
    assert s.interior.producers == pytest.approx([29 / 30 * 100, 100.0])
    assert s.error_boundary_share == pytest.approx(5 / 6) and s.boundary_share == pytest.approx(40 / 99)
    j = s.to_json({1: "a", 2: "b"})
    assert j["boundary"]["n"] == 40 and j["boundary_distance_px"] == 2.0 and j["boundary_metric"] == "euclidean"


def test_score_map_mask_leaves_pixels_out_but_keeps_their_edges():
    ref = _halves()
    pred = ref.copy()
    mask = np.ones_like(ref, bool)
    mask[:, 5:] = False  # class 2 is not scored, yet class 1's pixels next to it are still boundary pixels
    s = score_map(ref, pred, codes=[1, 2], mask=mask)
    assert s.all.confusion.sum() == 50 and s.boundary.confusion.sum() == 20 and s.all.oa == 100.0


def test_score_map_refuses_maps_of_another_size_and_empty_overlaps():
    with pytest.raises(BdgfError, match="differ in size"):
        score_map(_halves(), np.ones((5, 5)))
    with pytest.raises(BdgfError, match="no pixel is both labelled"):
        score_map(_halves(), np.zeros((10, 10)))


def test_full_reference_is_a_map_that_labels_nearly_every_pixel():
    ref = _halves()
    assert is_full_reference(ref)
    ref[:2] = 0
    assert not is_full_reference(ref)

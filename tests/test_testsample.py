"""The capped, stratified test sample of a training run and its estimates (bdgf_core/testsample.py, issue 16)."""
import numpy as np
import pytest

from bdgf_core.errors import BdgfError
from bdgf_core.metrics import assess
from bdgf_core.testsample import allocate, assess_sample, draw_test_sample


def test_allocation_is_equal_per_class_and_gives_small_classes_whole():
    assert allocate(np.array([100, 100, 100]), 30).tolist() == [10, 10, 10]
    # a class smaller than its share gives all of it; the others share what it leaves
    assert allocate(np.array([5, 1000, 2000]), 305).tolist() == [5, 150, 150]
    # an uneven division: the last pixels go to the largest classes
    assert allocate(np.array([50, 60, 70]), 31).tolist() == [10, 10, 11]
    # a cap above the total takes everything
    assert allocate(np.array([3, 4]), 100).tolist() == [3, 4]
    for seed in range(20):
        counts = np.random.default_rng(seed).integers(1, 500, 9)
        cap = int(np.random.default_rng(seed + 100).integers(9, counts.sum()))
        take = allocate(counts, cap)
        assert take.sum() == cap and (take <= counts).all() and (take >= 1).all()


def test_sample_is_stratified_fixed_by_the_seed_and_whole_under_the_cap():
    labels = np.repeat([1, 2, 3, 4], [40, 900, 3000, 60])
    a = draw_test_sample(labels, 400, seed=3)
    assert a.size == 400 and np.array_equal(a, np.unique(a))
    assert np.array_equal(a, draw_test_sample(labels, 400, seed=3))
    assert not np.array_equal(a, draw_test_sample(labels, 400, seed=4))
    counts = {c: int((labels[a] == c).sum()) for c in (1, 2, 3, 4)}
    assert counts == {1: 40, 2: 100, 3: 200, 4: 60} or counts == {1: 40, 2: 150, 3: 150, 4: 60}
    assert np.array_equal(draw_test_sample(labels, 0, seed=3), np.arange(labels.size))
    assert np.array_equal(draw_test_sample(labels, None, seed=3), np.arange(labels.size))
    assert np.array_equal(draw_test_sample(labels, labels.size, seed=3), np.arange(labels.size))
    with pytest.raises(BdgfError, match="smaller than the number of classes"):
        draw_test_sample(labels, 3, seed=0)


def test_sample_of_every_pixel_gives_the_plain_figures_with_no_uncertainty():
    rng = np.random.default_rng(0)
    ref = np.repeat([1, 2, 3], [300, 200, 100])
    pred = np.where(rng.random(ref.size) < 0.85, ref, rng.integers(1, 4, ref.size))
    plain = assess(ref, pred, [1, 2, 3])
    est = assess_sample(ref, pred, [1, 2, 3], ref)
    assert est.oa == pytest.approx(plain.oa) and est.aa == pytest.approx(plain.aa)
    assert est.kappa == pytest.approx(plain.kappa)
    assert np.allclose(est.users, plain.users) and np.allclose(est.producers, plain.producers)
    assert est.sample["oa_ci95"] == 0 and est.sample["aa_ci95"] == 0
    assert not any(est.sample["producers_ci95"]) and not any(est.sample["users_ci95"])


def _scene_test_set(rng):
    """Reference codes and predictions of a test set whose classes differ in size and accuracy."""
    sizes, accs = [4000, 600, 2500, 150, 1200], [0.97, 0.7, 0.9, 0.5, 0.99]
    ref = np.repeat(np.arange(1, 6), sizes)
    wrong = np.concatenate([rng.random(n) > a for n, a in zip(sizes, accs)])
    pred = np.where(wrong, (ref % 5) + 1, ref)  # errors go to the next class
    return ref, pred


def test_estimates_are_unbiased_and_the_intervals_cover():
    """Over many samples the estimates centre on the whole test set's figures (an equal-class sample
    read without the weights would put OA near the mean of the classes' accuracies, 81 %, not 92 %),
    and the 95 % intervals hold the true figure about 95 times in 100."""
    ref, pred = _scene_test_set(np.random.default_rng(1))
    codes = [1, 2, 3, 4, 5]
    true = assess(ref, pred, codes)
    oas, aas, kappas, users, cover_oa, cover_aa = [], [], [], [], 0, 0
    cover_pa, cover_ua = np.zeros(5), np.zeros(5)
    runs = 400
    for seed in range(runs):
        i = draw_test_sample(ref, 500, seed)
        est = assess_sample(ref[i], pred[i], codes, ref)
        oas.append(est.oa), aas.append(est.aa), kappas.append(est.kappa), users.append(est.users)
        cover_oa += abs(est.oa - true.oa) <= est.sample["oa_ci95"]
        cover_aa += abs(est.aa - true.aa) <= est.sample["aa_ci95"]
        cover_pa += np.abs(np.array(est.producers) - true.producers) <= est.sample["producers_ci95"]
        cover_ua += np.abs(np.array(est.users) - true.users) <= est.sample["users_ci95"]
        assert est.sample["n"] == 500 and est.sample["population"] == ref.size
    assert np.mean(oas) == pytest.approx(true.oa, abs=0.15)
    assert np.mean(aas) == pytest.approx(true.aa, abs=0.25)
    assert np.mean(kappas) == pytest.approx(true.kappa, abs=0.3)
    # user's accuracy is a ratio of two estimates: biased by up to about a point at 100 pixels per class
    assert np.allclose(np.mean(users, 0), true.users, atol=2.0)
    # the unweighted sample OA would be far off: the weights matter
    i = draw_test_sample(ref, 500, 0)
    assert abs(assess(ref[i], pred[i], codes).oa - true.oa) > 5
    assert 0.9 <= cover_oa / runs <= 0.995 and 0.9 <= cover_aa / runs <= 0.995
    # each class's intervals too; user's accuracy of class 1 has a rare commission error (12 of ~3900
    # pixels predicted 1) that many samples miss: its add-one variance still holds the true figure
    assert (cover_pa / runs >= 0.93).all() and (cover_ua / runs >= 0.93).all()


def test_sample_figures_reach_the_json_and_the_report():
    from bdgf_core.report import accuracy_section

    ref, pred = _scene_test_set(np.random.default_rng(2))
    i = draw_test_sample(ref, 300, 0)
    j = assess_sample(ref[i], pred[i], [1, 2, 3, 4, 5], ref).to_json({1: "water"})
    assert j["n"] == ref.size == j["sample"]["population"] and j["sample"]["n"] == 300
    assert [c["test_pixels"] for c in j["classes"]] == [c["reference_pixels"] for c in j["classes"]] == \
        [4000, 600, 2500, 150, 1200]
    assert sum(c["sampled"] for c in j["classes"]) == 300 == np.sum(j["sample"]["counts"])
    # the matrix shown is the whole test set's estimate: the figures can be read back from it
    cm = np.array(j["confusion"])
    assert np.abs(cm.sum(1) - [4000, 600, 2500, 150, 1200]).max() <= 3
    assert np.trace(cm) / cm.sum() * 100 == pytest.approx(j["oa"], abs=0.05)
    assert (np.diag(cm) / cm.sum(0) * 100) == pytest.approx([c["users"] for c in j["classes"]], abs=0.5)
    html = accuracy_section(j, {})
    assert f"300 of {ref.size}" in html and "stratified sample" in html and "60 of 600" in html
    assert f"{j['classes'][1]['producers']:.2f} <small>± {j['classes'][1]['producers_ci95']:.1f}</small>" in html
    lo, hi = j["oa"] - j["sample"]["oa_ci95"], j["oa"] + j["sample"]["oa_ci95"]
    assert f"{j['oa']:.2f}% <small>({lo:.2f}–{hi:.2f})</small>" in html
    # an interval is clipped to 0-100
    one = dict(j, oa=100.0, sample=dict(j["sample"], oa_ci95=0.4))
    assert "100.00% <small>(99.60–100.00)</small>" in accuracy_section(one, {})
    # a plain assessment keeps its old look
    plain = accuracy_section(assess(ref, pred, [1, 2, 3, 4, 5]).to_json(), {})
    assert "stratified sample" not in plain and "<small>" not in plain

import numpy as np
import pytest

from bdgf_core.baseline import ForestPredictor, fit_forest, forest_arrays, forest_proba, pixel_features


def test_numpy_forest_equals_scikit_learn():
    from sklearn.ensemble import RandomForestClassifier

    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 6)).astype(np.float32)
    y = np.where(x[:, 0] + x[:, 1] > 0, 3, 7) + (x[:, 2] > 1)
    rf = RandomForestClassifier(30, random_state=0).fit(x, y)
    xt = rng.normal(size=(1000, 6)).astype(np.float32)
    np.testing.assert_allclose(forest_proba(forest_arrays(rf), xt), rf.predict_proba(xt), atol=1e-6)


def test_predict_block_shapes_and_normalisation():
    rng = np.random.default_rng(1)
    spec = rng.normal(5, 2, size=(4, 300)).astype(np.float32)
    sar = rng.normal(0, 1, size=(2, 300)).astype(np.float32)
    y = (spec[0] > 5).astype(int) + 1
    stats = (spec.mean(1), spec.std(1), sar.mean(1), sar.std(1))
    forest = fit_forest(pixel_features(spec, sar, stats), y, trees=20, seed=0, n_jobs=1)
    pred = ForestPredictor(forest, spec.mean(1), spec.std(1), sar.mean(1), sar.std(1))
    probs = pred.predict_block(spec.reshape(4, 15, 20), sar.reshape(2, 15, 20))
    assert probs.shape == (2, 15, 20)
    np.testing.assert_allclose(probs.sum(0), 1, atol=1e-5)
    acc = (np.array(pred.codes)[probs.argmax(0).ravel()] == y).mean()
    assert acc > 0.95


def test_forest_grown_in_chunks_equals_one_fit_and_cancels():
    from sklearn.ensemble import RandomForestClassifier

    from bdgf_core.baseline import fit_forest, forest_arrays
    from bdgf_core.errors import Cancelled

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 5))
    y = (x[:, 0] + 0.3 * rng.normal(size=200) > 0).astype(int) + 1
    one = forest_arrays(RandomForestClassifier(n_estimators=30, random_state=3, n_jobs=1).fit(x, y))
    seen = []
    chunked = fit_forest(x, y, trees=30, seed=3, n_jobs=1, chunk=7, progress=lambda f, m: seen.append(f))
    assert one.keys() == chunked.keys() and all(np.array_equal(one[k], chunked[k]) for k in one)
    assert seen == sorted(seen) and seen[-1] == 1.0 and len(seen) == 5
    calls = []
    with pytest.raises(Cancelled):
        fit_forest(x, y, trees=30, seed=3, n_jobs=1, chunk=7, cancelled=lambda: calls.append(1) or len(calls) > 2)


def test_window_means_equal_a_plain_loop():
    from bdgf_core.baseline import window_means

    rng = np.random.default_rng(2)
    x = rng.normal(size=(3, 12, 15)).astype(np.float32)
    for size in (3, 9):
        got = window_means(x, size)
        h = size // 2
        assert got.shape == (3, 12 - 2 * h, 15 - 2 * h)
        want = np.array([[[x[c, r:r + size, k:k + size].mean() for k in range(got.shape[2])]
                          for r in range(got.shape[1])] for c in range(3)])
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_window_forest_predicts_a_block_with_its_halo_as_the_whole_image():
    from bdgf_core.baseline import window_means

    rng = np.random.default_rng(3)
    spec = rng.normal(size=(3, 30, 20)).astype(np.float32)
    sar = rng.normal(size=(1, 30, 20)).astype(np.float32)
    zero, one = np.zeros(3, np.float32), np.ones(3, np.float32)
    pad = lambda a: np.pad(a, ((0, 0), (4, 4), (4, 4)), mode="reflect")  # noqa: E731
    x = window_means(np.concatenate([pad(spec), pad(sar)]), 9).reshape(4, -1).T
    forest = fit_forest(x, (x[:, 0] > 0).astype(int) + 1, trees=10, seed=0, n_jobs=1)
    pred = ForestPredictor(forest, zero, one, zero[:1], one[:1], window=9)
    assert pred.halo == 4
    whole = pred.predict_block(pad(spec), pad(sar))
    # rows 10..19 with 4 halo rows of real image above and below
    block = pred.predict_block(pad(spec)[:, 10:28], pad(sar)[:, 10:28])
    np.testing.assert_allclose(block, whole[:, 10:20], atol=1e-6)

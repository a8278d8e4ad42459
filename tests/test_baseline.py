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

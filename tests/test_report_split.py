"""The split section of the training and accuracy reports says what was used (issue 8)."""
from bdgf_core.report import split_section


def _summary(**kw):
    base = {"seed": 3, "samples_per_class": 50, "train": 100, "validation": 20, "test": 900, "warnings": [],
            "classes": {"1": {"name": "Water", "train": 50, "validation": 10, "test": 400, "train_polygons": 2,
                              "test_polygons": 3},
                        "2": {"name": "Forest & <park>", "train": 50, "validation": 10, "test": 500,
                              "train_polygons": 4, "test_polygons": 1}}}
    return {**base, **kw}


def test_spatial_split_names_strategy_seed_counts_and_escapes_names():
    html = split_section(_summary(strategy="polygons"))
    assert "Strategy <b>polygons</b>, seed 3" in html
    assert "In all: 100 training, 20 validation, 900 test pixels." in html
    assert "<td>50</td><td>10</td><td>400</td><td>2</td><td>3</td>" in html
    assert "Forest &amp; &lt;park&gt;" in html and "optimistic" not in html


def test_split_fingerprint_is_shown_when_the_summary_has_one():
    assert "Split fingerprint <code>0123abcd4567</code>." in split_section(_summary(strategy="polygons",
                                                                                  fingerprint="0123abcd4567"))
    assert "fingerprint" not in split_section(_summary(strategy="polygons"))


def test_pixel_split_is_labelled_optimistic():
    assert "accuracy is optimistic" in split_section(_summary(strategy="pixels"))


def test_fixed_sets_name_both_layers_and_the_validation_strategy():
    html = split_section(_summary(strategy="fixed", validation_strategy="blocks", validation_share=0.2,
                                  groundtruth="/data/Augsburg/TrainImage.tif", test_groundtruth="/data/gt.gpkg",
                                  layer=None, test_layer="test polygons"))
    assert "training pixels from <b>TrainImage.tif</b>" in html
    assert "test pixels from <b>gt.gpkg (layer test polygons)</b>" in html
    assert "validation share taken by <b>blocks</b>" in html
    no_val = split_section(_summary(strategy="fixed", validation_strategy="polygons", validation_share=0.0,
                                    groundtruth="a.tif", test_groundtruth="b.tif"))
    assert "validation share" not in no_val


def test_no_summary_warns():
    assert "may include training pixels" in split_section(None)

"""The algorithms run through processing.run() against the fake runtime: argv, outputs, checks."""
from __future__ import annotations

import os
import sqlite3

import pytest
from qgis.core import QgsFeatureRequest, QgsProcessingException, QgsVectorLayer

import processing
from bdgf_qgis.provider import ALGORITHMS


def run(name, params):
    if name not in ALGORITHMS:
        pytest.skip(f"{name} is not in provider.ALGORITHMS")
    return processing.run(f"bdgf:{name}", params)


def argmap(args):
    return {args[i]: args[i + 1] for i in range(len(args) - 1) if args[i].startswith("--")}


def test_generate_scene(bdgf_provider, fake_runtime, tmp_path):
    out = tmp_path / "scene"
    res = run("generate_scene", {"SIZE": 40, "BANDS": 8, "SEED": 3, "VARIANT": 1, "OUTPUT_FOLDER": str(out)})
    [call] = fake_runtime()
    assert call["command"] == "generate-scene"
    assert argmap(call["args"]) == {"--out-dir": str(out), "--size": "40", "--bands": "8", "--seed": "3",
                                    "--variant": "hard", "--progress": "json"}
    assert res["SPECTRAL"] == str(out / "spectral.tif")
    assert res["GROUND_TRUTH"] == str(out / "groundtruth.gpkg")
    assert res["CLASS_FIELD"] == "class"
    assert all(isinstance(v, str) for v in res.values())


def test_train_baseline_file_ground_truth(bdgf_provider, fake_runtime, tiny_scene, tmp_path):
    model = str(tmp_path / "rf.bdgf")
    res = run("train_baseline", {
        "SPECTRAL": tiny_scene["spectral"], "SAR": tiny_scene["sar"],
        "GROUND_TRUTH": tiny_scene["groundtruth"], "CLASS_FIELD": "class", "SAMPLES_PER_CLASS": 7,
        "SPLIT": 1, "BLOCK_SIZE": 8, "TREES": 11, "MODEL": model, "REPORT": str(tmp_path / "rf.html")})
    [call] = fake_runtime()
    a = argmap(call["args"])
    assert call["command"] == "train-baseline"
    assert a["--spectral"] == tiny_scene["spectral"] and a["--sar"] == tiny_scene["sar"]
    assert a["--groundtruth"] == tiny_scene["groundtruth"]  # a one-layer file is passed as is
    assert (a["--class-field"], a["--samples-per-class"], a["--split"], a["--block-size"], a["--trees"]) == \
        ("class", "7", "blocks", "8", "11")
    assert float(a["--validation-share"]) == 0.0
    assert a["--model"] == model and a["--report"] == str(tmp_path / "rf.html")
    assert res["MODEL"] == model and res["TRAIN_PIXELS"] == 300 and res["TEST_PIXELS"] == 1200


def _exported_classes(path):
    with sqlite3.connect(path) as db:
        table = db.execute("select table_name from gpkg_contents").fetchone()[0]
        return sorted(r[0] for r in db.execute(f'select "class" from "{table}"'))


def test_memory_and_filtered_ground_truth_are_exported(bdgf_provider, fake_runtime, tiny_scene, tmp_path):
    memory = QgsVectorLayer(tiny_scene["groundtruth"], "gt", "ogr").materialize(QgsFeatureRequest())
    assert memory.providerType() == "memory"
    filtered = QgsVectorLayer(tiny_scene["groundtruth"], "gt", "ogr")
    filtered.setSubsetString('"class" = 2')
    for layer, expected in ((memory, [1, 2]), (filtered, [2])):
        run("train_baseline", {"SPECTRAL": tiny_scene["spectral"], "SAR": tiny_scene["sar"],
                               "GROUND_TRUTH": layer, "CLASS_FIELD": "class",
                               "MODEL": str(tmp_path / "m.bdgf")})
        gt = argmap(fake_runtime()[-1]["args"])["--groundtruth"]
        assert gt != tiny_scene["groundtruth"] and gt.endswith(".gpkg") and os.path.exists(gt)
        assert _exported_classes(gt) == expected


def test_classify_and_assess(bdgf_provider, fake_runtime, tiny_scene, tmp_path):
    model = tmp_path / "m.bdgf"
    model.write_bytes(b"not read by the plugin")
    out = str(tmp_path / "map.tif")
    res = run("classify", {"MODEL": str(model), "SPECTRAL": tiny_scene["spectral"], "SAR": tiny_scene["sar"],
                           "OUTPUT": out, "ENTROPY": str(tmp_path / "ent.tif"), "DEVICE": 1, "MEMORY_MB": 256})
    a = argmap(fake_runtime()[-1]["args"])
    assert a["--out"] == out and a["--entropy"] == str(tmp_path / "ent.tif")
    assert "--confidence" not in a and "--features" not in a and "--diffusion-model" not in a
    assert (a["--device"], a["--memory-mb"], a["--model"]) == ("cpu", "256", str(model))
    assert res["OUTPUT"] == out and res["STYLE"] == str(tmp_path / "map.qml") and res["CONFIDENCE"] is None
    assert "--fast" not in a  # exact by default
    run("classify", {"MODEL": str(model), "SPECTRAL": tiny_scene["spectral"], "SAR": tiny_scene["sar"],
                     "FEATURES": tiny_scene["spectral"], "FAST": 2, "OUTPUT": str(tmp_path / "map2.tif")})
    assert argmap(fake_runtime()[-1]["args"])["--fast"] == "student"

    res = run("assess", {"MAP": tiny_scene["spectral"], "GROUND_TRUTH": tiny_scene["groundtruth"],
                         "CLASS_FIELD": "class", "MODEL": str(model), "REPORT": str(tmp_path / "acc.html"),
                         "CSV": str(tmp_path / "cm.csv")})
    a = argmap(fake_runtime()[-1]["args"])
    assert a["--report"] == str(tmp_path / "acc.html") and a["--csv"] == str(tmp_path / "cm.csv")
    assert "--json" not in a and a["--model"] == str(model)
    assert (res["OA"], res["AA"], res["KAPPA"]) == (87.5, 80.25, 79.0)
    assert all(isinstance(res[k], float) for k in ("OA", "AA", "KAPPA"))

    run("assess", {"MAP": tiny_scene["spectral"], "GROUND_TRUTH": tiny_scene["groundtruth"], "BOUNDARIES": 1,
                   "BOUNDARY_DISTANCE": 1.5, "REPORT": str(tmp_path / "acc2.html")})
    a = argmap(fake_runtime()[-1]["args"])
    assert (a["--boundaries"], float(a["--boundary-distance"])) == ("on", 1.5)

    run("train_baseline", {"SPECTRAL": tiny_scene["spectral"], "SAR": tiny_scene["sar"], "WINDOW": 2,
                           "GROUND_TRUTH": tiny_scene["groundtruth"], "MODEL": str(tmp_path / "rf9.bdgf")})
    assert argmap(fake_runtime()[-1]["args"])["--features"] == "mean9"


def test_pretrain_and_train_switches(bdgf_provider, fake_runtime, tiny_scene, tmp_path):
    run("pretrain", {"SPECTRAL": tiny_scene["spectral"], "SAR": tiny_scene["sar"], "STEPS": 5,
                     "TIMESTEPS": "5, 10", "MASKING": False, "PROFILE": 1, "DEVICE": 0,
                     "MODEL": str(tmp_path / "ddpm.bdgf"), "FEATURES": str(tmp_path / "feat.tif")})
    call = fake_runtime()[-1]
    a = argmap(call["args"])
    assert call["command"] == "pretrain" and "--no-masking" in call["args"] and "--no-speckle" not in call["args"]
    assert (a["--steps"], a["--timesteps"], a["--profile"], a["--device"]) == ("5", "5,10", "fast", "auto")
    assert a["--features"] == str(tmp_path / "feat.tif")
    assert "--batch-size" not in a and "--tile-size" not in a  # left to the profile

    run("pretrain", {"SPECTRAL": tiny_scene["spectral"], "SAR": tiny_scene["sar"], "PROFILE": 1,
                     "MODEL": str(tmp_path / "ddpm.bdgf"), "FEATURES": str(tmp_path / "feat.tif")})
    a = argmap(fake_runtime()[-1]["args"])
    assert a["--profile"] == "fast" and not {"--steps", "--timesteps", "--batch-size", "--tile-size"} & set(a)

    res = run("train", {"SPECTRAL": tiny_scene["spectral"], "SAR": tiny_scene["sar"],
                        "FEATURES": tiny_scene["spectral"], "GROUND_TRUTH": tiny_scene["groundtruth"],
                        "EPOCHS": 2, "MAMBA": False, "GUIDE_CNN": False, "MUTUAL": False, "SPLIT": 2,
                        "MODEL": str(tmp_path / "bdgf.bdgf")})
    call = fake_runtime()[-1]
    a = argmap(call["args"])
    assert call["command"] == "train"
    assert {"--no-mamba", "--no-guide-cnn", "--no-mutual"} <= set(call["args"])
    assert "--no-cnn" not in call["args"] and "--block-size" not in call["args"]
    assert (a["--epochs"], a["--split"], a["--features"]) == ("2", "pixels", tiny_scene["spectral"])
    assert float(a["--validation-share"]) == pytest.approx(0.1)
    assert a["--val-cap"] == "200"  # the capped validation subset of the runtime, by default
    assert a["--test-cap"] == "2000"  # the capped test sample, by default (issue 16)
    assert not {"--centre", "--flips", "--mix-share"} & set(a)  # the edge switches are off by default
    assert "--no-adaptive" not in call["args"]  # edge-aware patches: unset, the runtime's default (on)
    from qgis.core import QgsApplication
    assert QgsApplication.processingRegistry().algorithmById("bdgf:train").parameterDefinition(
        "ADAPTIVE").defaultValue() is True  # the dialog's default: on
    run("train", {"SPECTRAL": tiny_scene["spectral"], "SAR": tiny_scene["sar"], "FEATURES": tiny_scene["spectral"],
                  "GROUND_TRUTH": tiny_scene["groundtruth"], "CENTRE": True, "FLIPS": True, "MIX_SHARE": 1.0,
                  "ADAPTIVE": False, "TEST_CAP": 0, "MODEL": str(tmp_path / "edges.bdgf")})
    a = argmap(fake_runtime()[-1]["args"])
    assert a["--test-cap"] == "0"  # 0: every held-out pixel
    assert {"--centre", "--flips", "--no-adaptive"} <= set(fake_runtime()[-1]["args"]) and float(a["--mix-share"]) == 1.0
    assert res["MODEL"] == str(tmp_path / "bdgf.bdgf")


@pytest.mark.parametrize("name,bad,match", [
    ("train_baseline", {"SAMPLES_PER_CLASS": 0}, "SAMPLES_PER_CLASS"),
    ("train_baseline", {"TREES": -5}, "TREES"),
    ("train", {"EPOCHS": 0}, "EPOCHS"),
    ("train", {"CNN": False, "TRANSFORMER": False, "MAMBA": False}, "branches"),
    ("pretrain", {"TIMESTEPS": "5,x"}, "TIMESTEPS"),
    ("pretrain", {"TILE_SIZE": 4}, "TILE_SIZE"),  # 0 means the profile's tile size
    ("pretrain", {"STEPS": -1}, "STEPS"),
    ("classify", {"MEMORY_MB": 0}, "MEMORY_MB"),
])
def test_absurd_values_rejected_before_work(bdgf_provider, fake_runtime, tiny_scene, tmp_path, name, bad, match):
    model = tmp_path / "m.bdgf"
    model.write_bytes(b"x")
    params = {"SPECTRAL": tiny_scene["spectral"], "SAR": tiny_scene["sar"], "FEATURES": tiny_scene["spectral"],
              "GROUND_TRUTH": tiny_scene["groundtruth"], "MODEL": str(tmp_path / "o.bdgf"),
              "OUTPUT": str(tmp_path / "map.tif")}
    if name == "classify":
        params["MODEL"] = str(model)
    if name == "pretrain":
        params["FEATURES"] = str(tmp_path / "f.tif")
    params.update(bad)
    with pytest.raises(QgsProcessingException, match=match):
        run(name, params)
    assert fake_runtime() == [], "the runtime must not start"


def test_runtime_error_reaches_user(bdgf_provider, fake_runtime, tiny_scene, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_BDGF_FAIL", "the SAR raster is 3x3 but the spectral raster is 12x12")
    with pytest.raises(QgsProcessingException, match="SAR raster is 3x3"):
        run("train_baseline", {"SPECTRAL": tiny_scene["spectral"], "SAR": tiny_scene["sar"],
                               "GROUND_TRUTH": tiny_scene["groundtruth"], "MODEL": str(tmp_path / "m.bdgf")})


def test_output_extensions_checked(bdgf_provider, fake_runtime, tiny_scene, tmp_path):
    with pytest.raises(QgsProcessingException, match=r"\.bdgf"):
        run("train_baseline", {"SPECTRAL": tiny_scene["spectral"], "SAR": tiny_scene["sar"],
                               "GROUND_TRUTH": tiny_scene["groundtruth"], "MODEL": str(tmp_path / "m.pkl")})
    assert fake_runtime() == []


def test_missing_class_field_is_explained(bdgf_provider, fake_runtime, tiny_scene, tmp_path):
    with pytest.raises(QgsProcessingException):
        run("assess", {"MAP": tiny_scene["spectral"], "GROUND_TRUTH": tiny_scene["groundtruth"],
                       "CLASS_FIELD": "label", "REPORT": str(tmp_path / "r.html")})
    assert fake_runtime() == []


def test_processes_launch_the_runtime_under_torchrun(bdgf_provider, fake_runtime, tiny_scene, tmp_path):
    base = {"SPECTRAL": tiny_scene["spectral"], "SAR": tiny_scene["sar"], "FEATURES": tiny_scene["spectral"],
            "GROUND_TRUTH": tiny_scene["groundtruth"], "MODEL": str(tmp_path / "b.bdgf")}
    run("train", base)
    assert fake_runtime()[-1]["launcher"] == []  # one process: no torchrun
    run("train", {**base, "PROCESSES": 2})
    call = fake_runtime()[-1]
    assert call["command"] == "train"
    assert call["launcher"] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]

"""Bad input, one test per case of issue 6: the runtime refuses it with exit 1 (2 for values the
command line itself rejects) and one line that names the problem and the fix, and leaves no
output file; through QGIS the same line arrives as a QgsProcessingException.

Scenes are tiny (``generate-scene --size 32 --bands 6``); the odd rasters are made with GDAL.

Issue case                                    -> test (here unless named)
--------------------------------------------------------------------------------------------------
rasters that don't overlap                    -> test_rasters_that_do_not_overlap
different CRS that cannot be reconciled       -> test_crs_that_cannot_be_reconciled[no-crs-other-size,
                                                 engineering-crs]
a spectral raster with one band               -> test_spectral_raster_with_one_band
an all-nodata or NaN-filled input             -> test_all_nodata_or_nan_input[...] (train-baseline,
                                                 classify, pretrain)
polygons outside the raster                   -> test_polygons_outside_the_raster
a missing or empty class field                -> test_missing_or_empty_class_field[missing, empty]
a class with no pixel inside the raster       -> test_class_with_no_pixel_inside_the_raster
fewer labelled pixels than requested          -> test_fewer_labelled_pixels_than_requested[...] (works,
                                                 with a warning; counts never above what exists);
                                                 test_class_with_a_single_labelled_pixel_still_trains
a model trained on other band counts          -> test_model_trained_on_other_band_counts[spectral, sar];
                                                 test_cli.py::test_model_refuses_other_band_counts
a feature raster from another grid            -> test_feature_raster_from_another_grid[train, classify]
a truncated, corrupted or foreign model file  -> test_damaged_or_foreign_model_file[...];
                                                 test_safety.py (pickle / torch.save payloads)
an unwritable output path                     -> test_unwritable_output_path[...],
                                                 test_read_only_folder_is_refused (os.access as a
                                                 non-root user); test_cli.py::
                                                 test_swapped_inputs_and_unwritable_output
a path with spaces and non-ASCII characters   -> test_paths_with_spaces_and_non_ascii_work (must work);
                                                 test_cli.py::chain
device cuda without a GPU                     -> test_cuda_without_gpu[classify, train, pretrain]
absurd values (patch size 0 or even, epochs   -> test_absurd_values[...]
0, negative counts)
the same through QGIS (QgsProcessingException) -> test_qgis_reports_bad_input[...]
"""
from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal, ogr, osr

ROOT = Path(__file__).resolve().parents[1]
X0, Y0, PX = 650000.0, 5100000.0, 10.0  # the generated scene's origin and pixel size (bdgf_core.scene)
ENGINEERING_CRS = 'LOCAL_CS["site grid",UNIT["metre",1],AXIS["Easting",EAST],AXIS["Northing",NORTH]]'


# --- helpers ---------------------------------------------------------------------------------

def run(*args):
    p = subprocess.run([sys.executable, "-m", "bdgf_core", *map(str, args), "--progress", "json"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, OMP_NUM_THREADS="1"))
    events = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
    return p.returncode, events, p.stderr


def ok(*args) -> dict:
    code, events, stderr = run(*args)
    assert code == 0, json.dumps(events)[-2000:] + stderr[-2000:]
    return next(e["outputs"] for e in events if e["event"] == "result")


def listing(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def refused(args, *needles, out: Path, code: int = 1) -> str:
    """Run; expect ``code``, one one-line error containing every needle, and ``out`` unchanged."""
    before = listing(out)
    got, events, stderr = run(*args)
    if code == 2:  # rejected by the command line itself: argparse's line on stderr
        lines = [line for line in stderr.splitlines() if line.strip()]
        assert got == 2 and len(lines) == 1, (got, stderr)
        message = lines[0]
    else:
        errors = [e["message"] for e in events if e["event"] == "error"]
        assert got == code, (got, json.dumps(events)[-2000:], stderr[-2000:])
        assert len(errors) == 1, events
        message = errors[0]
        assert "internal error" not in message and "Traceback" not in stderr, stderr[-3000:]
    assert "\n" not in message and len(message) < 300, message
    for needle in needles:
        assert needle in message, (needle, message)
    assert listing(out) == before, f"left behind: {listing(out) - before}"
    return message


def write_raster(path: Path, array: np.ndarray, geotransform=None, wkt: str | None = None,
                 nodata: float | None = None) -> Path:
    a = np.asarray(array, np.float32)
    a = a[None] if a.ndim == 2 else a
    ds = gdal.GetDriverByName("GTiff").Create(str(path), a.shape[2], a.shape[1], a.shape[0], gdal.GDT_Float32)
    ds.SetGeoTransform(geotransform or (X0, PX, 0.0, Y0, 0.0, -PX))
    if wkt is None:
        s = osr.SpatialReference()
        s.ImportFromEPSG(32632)
        wkt = s.ExportToWkt()
    if wkt:
        ds.SetProjection(wkt)
    for i in range(a.shape[0]):
        band = ds.GetRasterBand(i + 1)
        band.WriteArray(a[i])
        if nodata is not None:
            band.SetNoDataValue(nodata)
    ds = None
    return path


def read(path) -> np.ndarray:
    return gdal.Open(str(path)).ReadAsArray().astype(np.float32)


def write_polygons(path: Path, features, field: str = "class", field_type=ogr.OFTInteger) -> Path:
    """features: [((xmin, ymin, xmax, ymax), value or None)] in UTM 32N."""
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32632)
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    layer = ds.CreateLayer("truth", srs, ogr.wkbPolygon)
    layer.CreateField(ogr.FieldDefn(field, field_type))
    for (x0, y0, x1, y1), value in features:
        f = ogr.Feature(layer.GetLayerDefn())
        f.SetGeometry(ogr.CreateGeometryFromWkt(f"POLYGON(({x0} {y0},{x1} {y0},{x1} {y1},{x0} {y1},{x0} {y0}))"))
        if value is not None:
            f.SetField(field, value)
        layer.CreateFeature(f)
    ds = None
    return path


def box(col0, row0, col1, row1):
    """A box over pixel columns [col0, col1) and rows [row0, row1) of the scene's grid."""
    return (X0 + col0 * PX, Y0 - row1 * PX, X0 + col1 * PX, Y0 - row0 * PX)


# --- shared scene and models -------------------------------------------------------------------

@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad input scene")
    s = ok("generate-scene", "--out-dir", d, "--size", "32", "--bands", "6", "--seed", "0")
    s["dir"] = d
    s["rf"] = ok("train-baseline", "--spectral", s["spectral"], "--sar", s["sar"], "--groundtruth",
                 s["groundtruth"], "--samples-per-class", "10", "--trees", "5", "--model", d / "rf.bdgf")["model"]
    return s


@pytest.fixture(scope="module")
def bdgf_model(scene):
    """A BDGF model that needs diffusion features (trained on a stand-in feature raster)."""
    d = scene["dir"]
    feats = write_raster(d / "features.tif", np.random.default_rng(0).random((4, 32, 32)))
    return ok("train", "--spectral", scene["spectral"], "--sar", scene["sar"], "--groundtruth", scene["groundtruth"],
              "--features", feats, "--samples-per-class", "5", "--epochs", "1", "--patch-size", "3",
              "--batch-size", "32", "--no-mamba", "--no-transformer", "--no-mutual", "--device", "cpu",
              "--model", d / "bdgf.bdgf")["model"]


@pytest.fixture()
def out(tmp_path) -> Path:
    d = tmp_path / "out"
    d.mkdir()
    return d


def train_args(scene, out, **override):
    a = {"--spectral": scene["spectral"], "--sar": scene["sar"], "--groundtruth": scene["groundtruth"],
         "--samples-per-class": "10", "--trees": "5", "--model": out / "m.bdgf"}
    a.update(override)
    return ["train-baseline"] + [x for kv in a.items() for x in kv if x is not None]


def classify_args(scene, out, **override):
    a = {"--model": scene["rf"], "--spectral": scene["spectral"], "--sar": scene["sar"], "--out": out / "map.tif"}
    a.update(override)
    return ["classify"] + [x for kv in a.items() for x in kv if x is not None]


# --- the cases -------------------------------------------------------------------------------

def test_rasters_that_do_not_overlap(scene, out, tmp_path):
    far = write_raster(tmp_path / "far.tif", read(scene["sar"]), (X0 + 1e6, PX, 0.0, Y0, 0.0, -PX))
    refused(train_args(scene, out, **{"--sar": far}), "far.tif does not overlap the spectral raster",
            "give rasters of the same area", out=out)
    refused(classify_args(scene, out, **{"--sar": far}), "does not overlap", out=out)


@pytest.mark.parametrize("case", ["no-crs-other-size", "engineering-crs"])
def test_crs_that_cannot_be_reconciled(scene, out, tmp_path, case):
    sar = read(scene["sar"])
    if case == "no-crs-other-size":
        bad = write_raster(tmp_path / "nocrs.tif", sar[:, :20, :20], (0, 1, 0, 0, 0, -1), wkt="")
        needles = ("nocrs.tif and the spectral raster cannot be reconciled", "assign a CRS")
    else:
        bad = write_raster(tmp_path / "local.tif", sar, wkt=ENGINEERING_CRS)
        needles = ("local.tif", "site grid", "WGS 84 / UTM zone 32N", "cannot be transformed", "reproject it")
    refused(train_args(scene, out, **{"--sar": bad}), *needles, out=out)


def test_spectral_raster_with_one_band(scene, out, tmp_path):
    one = write_raster(tmp_path / "one.tif", read(scene["spectral"])[:1])
    refused(train_args(scene, out, **{"--spectral": one}), "one.tif has 1 band", "at least 2 bands", out=out)
    refused(classify_args(scene, out, **{"--spectral": one}), "has 1 band", out=out)


@pytest.mark.parametrize("case", ["train-nan-spectral", "train-nodata-sar", "classify-nan-spectral",
                                  "classify-nodata-sar", "pretrain-nan-spectral"])
def test_all_nodata_or_nan_input(scene, out, tmp_path, case):
    nan = write_raster(tmp_path / "nan.tif", read(scene["spectral"]) * np.nan)
    nodata = write_raster(tmp_path / "nodata.tif", np.full((2, 32, 32), -9999.0), nodata=-9999.0)
    if case.startswith("train"):
        bad = {"--spectral": nan} if "spectral" in case else {"--sar": nodata}
        refused(train_args(scene, out, **bad), "every labelled pixel is nodata", "nodata values", out=out)
    elif case.startswith("classify"):
        bad = {"--spectral": nan} if "spectral" in case else {"--sar": nodata}
        refused(classify_args(scene, out, **bad), "no pixel with data", "check their nodata values", out=out)
    else:
        refused(["pretrain", "--spectral", nan, "--sar", scene["sar"], "--profile", "fast", "--steps", "1",
                 "--device", "cpu", "--model", out / "d.bdgf", "--features", out / "f.tif"],
                "no pixel with data", "nodata values", out=out)


def test_polygons_outside_the_raster(scene, out, tmp_path):
    gt = write_polygons(tmp_path / "away.gpkg", [((X0 + 1e5, Y0, X0 + 1e5 + 50, Y0 + 50), 1),
                                                 ((X0 - 500, Y0 + 500, X0 - 400, Y0 + 600), 2)])
    refused(train_args(scene, out, **{"--groundtruth": gt}), "no polygon of away.gpkg covers a pixel",
            "same area and CRS", out=out)


@pytest.mark.parametrize("case", ["missing", "empty"])
def test_missing_or_empty_class_field(scene, out, tmp_path, case):
    boxes = [box(1, 1, 10, 10), box(15, 15, 30, 30)]
    if case == "missing":
        gt = write_polygons(tmp_path / "kind.gpkg", [(b, 1) for b in boxes], field="kind")
        refused(train_args(scene, out, **{"--groundtruth": gt}), "'class' is not in kind.gpkg", "fields: kind",
                "choose the field", out=out)
    else:
        gt = write_polygons(tmp_path / "blank.gpkg", [(b, None) for b in boxes])
        refused(train_args(scene, out, **{"--groundtruth": gt}), "'class' of blank.gpkg is empty",
                "fill it with class codes", out=out)


def test_class_with_no_pixel_inside_the_raster(scene, out, tmp_path):
    gt = write_polygons(tmp_path / "partly.gpkg", [(box(1, 1, 10, 10), 1), (box(15, 15, 30, 30), 2),
                                                   (box(100, 100, 110, 110), 3)])
    refused(train_args(scene, out, **{"--groundtruth": gt}), "class 'class 3' (code 3) has no labelled pixel",
            "inside the raster", out=out)


@pytest.mark.parametrize("split", ["polygons", "pixels"])
def test_fewer_labelled_pixels_than_requested(scene, out, tmp_path, split):
    """Not an error: all the class's training pixels are used, with a warning; never more."""
    gt = write_polygons(tmp_path / "small.gpkg", [(box(1, 1, 4, 4), 1), (box(6, 1, 8, 3), 1),
                                                  (box(15, 15, 30, 30), 2), (box(12, 20, 14, 30), 2)])
    code, events, stderr = run(*train_args(scene, out, **{"--groundtruth": gt, "--samples-per-class": "1000",
                                                          "--split": split}))
    assert code == 0, stderr
    warnings = [e["message"] for e in events if e["event"] == "warning"]
    assert any("fewer than the 1000 requested" in w for w in warnings), warnings
    from bdgf_core.modelfile import load_model

    tensors, meta = load_model(out / "m.bdgf")
    classes = meta["split"]["classes"]
    labelled = {"1": 9 + 4, "2": 15 * 15 + 2 * 10}
    for code_, info in classes.items():
        assert 0 < info["train"] <= labelled[code_] and info["train"] + info["test"] <= labelled[code_]
    assert tensors["split.train"].size == sum(c["train"] for c in classes.values())


def test_class_with_a_single_labelled_pixel_still_trains(scene, out, tmp_path):
    gt = write_polygons(tmp_path / "tiny class.gpkg", [(box(1, 1, 10, 10), 1), (box(12, 1, 20, 10), 1),
                                                       (box(15, 15, 30, 30), 2), (box(1, 20, 10, 30), 2),
                                                       (box(25, 2, 26, 3), 3)])
    code, events, stderr = run(*train_args(scene, out, **{"--groundtruth": gt}))
    assert code == 0, [e for e in events if e["event"] == "error"]
    warnings = [e["message"] for e in events if e["event"] == "warning"]
    assert any("'class 3'" in w and "test" in w for w in warnings), warnings
    from bdgf_core.modelfile import load_model

    assert load_model(out / "m.bdgf")[1]["split"]["classes"]["3"]["train"] == 1


@pytest.mark.parametrize("which", ["spectral", "sar"])
def test_model_trained_on_other_band_counts(scene, out, tmp_path, which):
    if which == "spectral":
        other = write_raster(tmp_path / "seven.tif", np.concatenate([read(scene["spectral"])] * 2)[:7])
        refused(classify_args(scene, out, **{"--spectral": other}),
                "trained on a spectral raster of 6 bands, but this one has 7", "give the spectral raster", out=out)
    else:
        other = write_raster(tmp_path / "vv.tif", read(scene["sar"])[:1])
        refused(classify_args(scene, out, **{"--sar": other}),
                "trained on a SAR raster of 2 bands, but this one has 1", "give the SAR raster", out=out)


@pytest.mark.parametrize("step", ["train", "classify"])
def test_feature_raster_from_another_grid(scene, bdgf_model, out, tmp_path, step):
    shifted = write_raster(tmp_path / "shifted.tif", np.ones((4, 32, 32)), (X0 + 5, PX, 0.0, Y0, 0.0, -PX))
    smaller = write_raster(tmp_path / "smaller.tif", np.ones((4, 16, 16)))
    for feats in (shifted, smaller):
        if step == "train":
            args = ["train", "--spectral", scene["spectral"], "--sar", scene["sar"], "--groundtruth",
                    scene["groundtruth"], "--features", feats, "--epochs", "1", "--device", "cpu",
                    "--model", out / "m.bdgf"]
        else:
            args = classify_args(scene, out, **{"--model": bdgf_model, "--features": feats})
        refused(args, "diffusion feature raster is on another grid", "Pretrain DDPM", out=out)


def _damaged_models(scene, folder: Path) -> dict[str, tuple[Path, str]]:
    from safetensors.numpy import save_file

    good = Path(scene["rf"]).read_bytes()
    header = struct.unpack("<Q", good[:8])[0]
    cases = {}

    def make(name, data, needle):
        p = folder / f"{name}.bdgf"
        p.write_bytes(data)
        cases[name] = (p, needle)

    make("truncated", good[: len(good) // 2], "not a BDGF model file (or it is truncated or corrupted)")
    make("cut-in-weights", good[: 8 + header + 16], "not a BDGF model file (or it is truncated or corrupted)")
    make("empty", b"", "not a BDGF model file")
    make("header-garbage", good[:8] + b"\xff" * 40 + good[48:], "not a BDGF model file")
    flipped = bytearray(good)
    for i in range(8 + header, len(flipped), 7):
        flipped[i] ^= 0xFF
    make("corrupted-weights", bytes(flipped), "is damaged (its weights do not match their checksum)")
    make("geotiff", Path(scene["spectral"]).read_bytes(), "not a BDGF model file")
    make("zip", b"PK\x03\x04" + b"\0" * 100, "not a BDGF model file")
    p = folder / "foreign.bdgf"
    save_file({"weight": np.zeros((3, 3), np.float32)}, str(p), metadata={"format": "pt"})
    cases["foreign-safetensors"] = (p, "not a BDGF model file")
    cases["missing"] = (folder / "nowhere.bdgf", "does not exist")
    return cases


@pytest.mark.parametrize("case", ["truncated", "cut-in-weights", "empty", "header-garbage", "corrupted-weights",
                                  "geotiff", "zip", "foreign-safetensors", "missing"])
def test_damaged_or_foreign_model_file(scene, out, tmp_path, case):
    path, needle = _damaged_models(scene, tmp_path)[case]
    message = refused(classify_args(scene, out, **{"--model": path}), needle, out=out)
    assert "train" in message or "give" in message or "check the path" in message  # the fix


def test_diffusion_model_given_as_classifier(scene, out, tmp_path):
    from bdgf_core.modelfile import save_model

    ddpm = save_model(tmp_path / "ddpm.bdgf", "diffusion", {"w": np.zeros(2, np.float32)}, {})
    refused(classify_args(scene, out, **{"--model": ddpm}), "is a diffusion model, not a classifier",
            "Train BDGF", out=out)


@pytest.mark.parametrize("case", ["parent-is-a-file", "output-is-a-folder", "folder-under-a-file"])
@pytest.mark.parametrize("command", ["train-baseline", "classify"])
def test_unwritable_output_path(scene, out, tmp_path, case, command):
    blocker = out / "file"
    blocker.write_text("x")
    (out / "folder.tif").mkdir()
    (out / "folder.bdgf").mkdir()
    ext = ".bdgf" if command == "train-baseline" else ".tif"
    dest, needle = {
        "parent-is-a-file": (blocker / f"m{ext}", "is a file, not a folder"),
        "output-is-a-folder": (out / f"folder{ext}", "is a folder; give a file name"),
        "folder-under-a-file": (blocker / "sub" / f"m{ext}", "cannot create the folder"),
    }[case]
    args = train_args(scene, out, **{"--model": dest}) if command == "train-baseline" \
        else classify_args(scene, out, **{"--out": dest})
    refused(args, needle, out=out)


def test_read_only_folder_is_refused(scene, out, monkeypatch, capsys):
    """As a user who cannot write the folder (simulated: the tests may run as root, who can)."""
    from bdgf_core import atomic, cli

    ro = out / "read only"
    ro.mkdir()
    real_access = os.access
    monkeypatch.setattr(atomic.os, "access", lambda p, mode, **kw: False if Path(p) == ro else real_access(p, mode))
    for args in (train_args(scene, out, **{"--model": ro / "m.bdgf"}),
                 classify_args(scene, out, **{"--out": ro / "map.tif", "--confidence": out / "conf.tif"})):
        code = cli.main([*map(str, args), "--progress", "json"])
        events = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
        [message] = [e["message"] for e in events if e["event"] == "error"]
        assert code == 1 and "read only is not writable" in message and "writable folder" in message
    assert listing(out) == {"read only"}


def test_paths_with_spaces_and_non_ascii_work(tmp_path):
    d = tmp_path / "dossier données ü 地图" / "sous dossier"
    s = ok("generate-scene", "--out-dir", d, "--size", "32", "--bands", "6", "--seed", "0")
    trained = ok("train-baseline", "--spectral", s["spectral"], "--sar", s["sar"], "--groundtruth", s["groundtruth"],
                 "--samples-per-class", "10", "--trees", "5", "--model", d / "modèle forêt.bdgf",
                 "--report", d / "rapport d'entraînement.html")
    classified = ok("classify", "--model", trained["model"], "--spectral", s["spectral"], "--sar", s["sar"],
                    "--out", d / "carte é ü.tif", "--confidence", d / "confiance 置信.tif")
    assessed = ok("assess", "--map", classified["map"], "--groundtruth", s["groundtruth"], "--model",
                  trained["model"], "--report", d / "précision.html", "--csv", d / "matrice é.csv")
    for p in (trained["model"], trained["report"], classified["map"], classified["confidence"], assessed["report"]):
        assert Path(p).is_file() and Path(p).parent == d, p
    assert 0 <= assessed["oa"] <= 100
    assert gdal.Open(classified["map"]).RasterXSize == 32
    assert not [p for p in d.iterdir() if "partial" in p.name]


@pytest.mark.parametrize("command", ["classify", "train", "pretrain"])
def test_cuda_without_gpu(scene, out, command):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    if command == "classify":
        args = classify_args(scene, out, **{"--device": "cuda"})
    elif command == "train":
        args = ["train", "--spectral", scene["spectral"], "--sar", scene["sar"], "--groundtruth",
                scene["groundtruth"], "--no-guide-cnn", "--no-guide-transformer", "--no-guide-mamba",
                "--device", "cuda", "--model", out / "m.bdgf"]
    else:
        args = ["pretrain", "--spectral", scene["spectral"], "--sar", scene["sar"], "--device", "cuda",
                "--model", out / "d.bdgf", "--features", out / "f.tif"]
    refused(args, "device cuda was asked for, but no CUDA GPU is available", "use device auto or cpu", out=out)


ABSURD = [  # (id, command, extra args, exit code, needles)
    ("patch-0", "train", ["--patch-size", "0"], 1, ["patch size must be odd and positive", "got 0"]),
    ("patch-even", "train", ["--patch-size", "4"], 1, ["patch size must be odd and positive", "got 4"]),
    ("patch-negative", "train", ["--patch-size", "-3"], 1, ["patch size must be odd and positive", "got -3"]),
    ("epochs-0", "train", ["--epochs", "0"], 2, ["--epochs", "must be a positive whole number, got 0"]),
    ("batch-negative", "train", ["--batch-size", "-8"], 2, ["--batch-size", "positive whole number, got -8"]),
    ("samples-negative", "train-baseline", ["--samples-per-class", "-5"], 2,
     ["--samples-per-class", "positive whole number, got -5"]),
    ("samples-0", "train-baseline", ["--samples-per-class", "0"], 2, ["positive whole number, got 0"]),
    ("trees-0", "train-baseline", ["--trees", "0"], 2, ["--trees", "positive whole number, got 0"]),
    ("validation-1", "train-baseline", ["--validation-share", "1"], 2, ["share in [0, 1), got 1"]),
    ("validation-negative", "train-baseline", ["--validation-share", "-0.2"], 2, ["share in [0, 1)"]),
    ("block-1", "train-baseline", ["--split", "blocks", "--block-size", "1"], 1,
     ["block size must be at least 2 pixels, got 1"]),
    ("size-0", "generate-scene", ["--size", "0"], 2, ["--size", "positive whole number, got 0"]),
    ("size-1", "generate-scene", ["--size", "1"], 1, ["scene size must be at least 16 pixels, got 1"]),
    ("bands-negative", "generate-scene", ["--bands", "-2"], 2, ["--bands", "positive whole number, got -2"]),
    ("memory-0", "classify", ["--memory-mb", "0"], 2, ["--memory-mb", "positive whole number, got 0"]),
    ("memory-1", "classify", ["--memory-mb", "1"], 1, ["memory budget must be at least 32 MB, got 1"]),
    ("steps-0", "pretrain", ["--steps", "0"], 2, ["--steps", "positive whole number, got 0"]),
    ("timesteps-0", "pretrain", ["--timesteps", "0"], 2, ["timesteps must be positive whole numbers"]),
    ("timesteps-text", "pretrain", ["--timesteps", "5,x"], 2, ["whole numbers separated by commas"]),
    ("timesteps-too-large", "pretrain", ["--timesteps", "5000"], 1, ["timesteps must lie in 1..", "5000"]),
    ("tile-1", "pretrain", ["--tile-size", "1"], 1, ["tile >= 4"]),
]


@pytest.mark.parametrize("case", ABSURD, ids=[c[0] for c in ABSURD])
def test_absurd_values(scene, out, case):
    _, command, extra, code, needles = case
    base = {
        "train": ["train", "--spectral", scene["spectral"], "--sar", scene["sar"], "--groundtruth",
                  scene["groundtruth"], "--no-guide-cnn", "--no-guide-transformer", "--no-guide-mamba",
                  "--epochs", "1", "--device", "cpu", "--model", out / "m.bdgf"],
        "train-baseline": train_args(scene, out),
        "generate-scene": ["generate-scene", "--out-dir", out / "scene"],
        "classify": classify_args(scene, out),
        "pretrain": ["pretrain", "--spectral", scene["spectral"], "--sar", scene["sar"], "--profile", "fast",
                     "--steps", "1", "--device", "cpu", "--model", out / "d.bdgf", "--features", out / "f.tif"],
    }[command]
    refused([*base, *extra], *needles, out=out, code=code)


# --- the same through QGIS ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def bdgf_registered(qgis_processing):
    """The BDGF provider in the registry (the one of tests/qgis when that ran first)."""
    from qgis.core import QgsApplication

    from bdgf_qgis.provider import BdgfProvider

    registry = QgsApplication.processingRegistry()
    if registry.providerById("bdgf") is not None:
        yield
        return
    provider = BdgfProvider()
    assert registry.addProvider(provider)
    yield
    registry.removeProvider(provider)


QGIS_CASES = ["one-band", "no-overlap", "polygons-outside", "damaged-model", "cuda", "even-patch", "unwritable",
              "nan-input"]


@pytest.mark.parametrize("case", QGIS_CASES)
def test_qgis_reports_bad_input(scene, bdgf_registered, out, tmp_path, monkeypatch, case):
    """Through processing.run (the real runtime): a QgsProcessingException with the runtime's line
    (or the algorithm's own check), and no output file."""
    import processing
    from qgis.core import QgsProcessingException

    monkeypatch.setenv("BDGF_PYTHON", sys.executable)
    sar = read(scene["sar"])
    train = {"SPECTRAL": scene["spectral"], "SAR": scene["sar"], "GROUND_TRUTH": scene["groundtruth"],
             "CLASS_FIELD": "class", "SAMPLES_PER_CLASS": 10, "TREES": 5, "MODEL": str(out / "m.bdgf")}
    classify = {"MODEL": scene["rf"], "SPECTRAL": scene["spectral"], "SAR": scene["sar"], "DEVICE": 1,
                "OUTPUT": str(out / "map.tif")}
    if case == "one-band":
        alg, params, needle = "train_baseline", dict(train, SPECTRAL=str(write_raster(
            tmp_path / "one.tif", read(scene["spectral"])[:1]))), "has 1 band"
    elif case == "no-overlap":
        alg, params, needle = "train_baseline", dict(train, SAR=str(write_raster(
            tmp_path / "far.tif", sar, (X0 + 1e6, PX, 0.0, Y0, 0.0, -PX)))), "does not overlap"
    elif case == "polygons-outside":
        gt = write_polygons(tmp_path / "away.gpkg", [((X0 + 1e5, Y0, X0 + 1e5 + 50, Y0 + 50), 1)])
        alg, params, needle = "train_baseline", dict(train, GROUND_TRUTH=str(gt)), "covers a pixel"
    elif case == "damaged-model":
        bad = tmp_path / "bad.bdgf"
        bad.write_bytes(Path(scene["rf"]).read_bytes()[:100])
        alg, params, needle = "classify", dict(classify, MODEL=str(bad)), "not a BDGF model file"
    elif case == "cuda":
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has a GPU")
        alg, params, needle = "classify", dict(classify, DEVICE=2), "no CUDA GPU"
    elif case == "even-patch":
        alg, params, needle = "train", dict(train, FEATURES=scene["spectral"], PATCH_SIZE=4, EPOCHS=1), "odd"
    elif case == "unwritable":
        (out / "file").write_text("x")
        alg, params, needle = "classify", dict(classify, OUTPUT=str(out / "file" / "map.tif")), "not a folder"
    else:
        nan = write_raster(tmp_path / "nan.tif", read(scene["spectral"]) * np.nan)
        alg, params, needle = "classify", dict(classify, SPECTRAL=str(nan)), "no pixel with data"
    before = listing(out)
    with pytest.raises(QgsProcessingException) as err:
        processing.run(f"bdgf:{alg}", params)
    assert needle in str(err.value), str(err.value)
    assert listing(out) == before

"""The user's data as they have it (issue 17): nothing written beside the inputs, one message for a
damaged raster, fewer than two classes and complex rasters refused, class fields of any type with
an optional name field, label rasters' unlabelled value, classes coded 0 or negative on a correct
map, several SAR / spectral files stacked, SAR averaged in linear power onto a coarser grid, and
training without features when the guidance is off.

Scenes are tiny (``generate-scene --size 32 --bands 6``); the odd inputs are made with GDAL.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal, ogr

from bdgf_core.errors import BdgfError
from bdgf_core.groundtruth import load_ground_truth
from bdgf_core.raster import Grid, RasterSource, open_raster
from test_bad_input import PX, X0, Y0, box, listing, ok, refused, write_polygons, write_raster


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """The demo scene in a folder of its own (the 'input folder' that must stay as it is)."""
    d = tmp_path_factory.mktemp("user inputs")
    s = ok("generate-scene", "--out-dir", d, "--size", "32", "--bands", "6", "--seed", "0")
    s["dir"] = d
    return s


@pytest.fixture()
def out(tmp_path) -> Path:
    d = tmp_path / "out"
    d.mkdir()
    return d


def baseline(scene, out, *extra, name="m.bdgf", **override) -> list:
    """train-baseline's arguments; ``override`` by option name (a list gives several files)."""
    a = {"--spectral": scene["spectral"], "--sar": scene["sar"], "--groundtruth": scene["groundtruth"],
         "--samples-per-class": "10", "--trees": "5", "--model": out / name}
    a.update(override)
    args = ["train-baseline"]
    for k, v in a.items():
        args += [k, *v] if isinstance(v, list) else [k, v]
    return args + list(extra)


def scene_labels(scene) -> np.ndarray:
    """The scene's ground truth as a (32, 32) array of its codes 1..7, 0 elsewhere."""
    grid = RasterSource(scene["spectral"]).grid
    gt = load_ground_truth(scene["groundtruth"], grid)
    return np.where(gt.labels > 0, gt.labels, 0)  # the scene codes 1..7


def grid_of(scene) -> Grid:
    return RasterSource(scene["spectral"]).grid


# --- nothing written beside the inputs -----------------------------------------------------------

def test_inputs_are_opened_without_pam(tmp_path):
    """What dirties GDAL's PAM on an input (here: statistics) writes no .aux.xml beside it."""
    p = write_raster(tmp_path / "sar.tif", np.random.default_rng(0).random((2, 8, 8)))
    ds = open_raster(p, "SAR raster")
    ds.GetRasterBand(1).ComputeStatistics(False)
    ds = None
    assert sorted(x.name for x in tmp_path.iterdir()) == ["sar.tif"]


@pytest.mark.slow
def test_no_file_appears_beside_the_inputs(scene, out):
    """train-baseline, classify, assess, pretrain and train on inputs in one folder, outputs in another:
    the input folder lists the same files after as before (SAR on a finer grid, so it is resampled)."""
    d = scene["dir"]
    sar5 = d / "sar_5m.tif"
    gdal.Warp(str(sar5), str(scene["sar"]), xRes=5, yRes=5, resampleAlg="bilinear")
    before = listing(d)
    ok(*baseline(scene, out, **{"--sar": sar5}))
    ok("classify", "--model", out / "m.bdgf", "--spectral", scene["spectral"], "--sar", sar5, "--out", out / "map.tif")
    ok("assess", "--map", out / "map.tif", "--groundtruth", scene["groundtruth"], "--report", out / "a.html")
    ok("pretrain", "--spectral", scene["spectral"], "--sar", sar5, "--profile", "fast", "--steps", "2",
       "--batch-size", "2", "--tile-size", "16", "--device", "cpu", "--model", out / "d.bdgf", "--features",
       out / "f.tif")
    # all guidance off: no feature raster needed
    ok("train", "--spectral", scene["spectral"], "--sar", sar5, "--groundtruth", scene["groundtruth"],
       "--no-guide-cnn", "--no-guide-transformer", "--no-guide-mamba", "--no-mamba", "--no-transformer",
       "--no-mutual", "--epochs", "1", "--patch-size", "3", "--samples-per-class", "5", "--device", "cpu",
       "--model", out / "b.bdgf")
    ok("classify", "--model", out / "b.bdgf", "--spectral", scene["spectral"], "--sar", sar5, "--out", out / "b.tif")
    assert listing(d) == before
    sar5.unlink()


# --- one message for a damaged raster ------------------------------------------------------------

@pytest.mark.parametrize("command", ["train-baseline", "classify", "pretrain", "train"])
def test_truncated_raster_gives_one_clear_message(scene, out, tmp_path, command):
    cut = tmp_path / "cut.tif"
    cut.write_bytes(Path(scene["spectral"]).read_bytes()[:12000])
    if command == "train-baseline":
        args = baseline(scene, out, **{"--spectral": cut})
    elif command == "classify":
        ok(*baseline(scene, tmp_path, name="rf.bdgf"))
        args = ["classify", "--model", tmp_path / "rf.bdgf", "--spectral", cut, "--sar", scene["sar"],
                "--out", out / "map.tif"]
    elif command == "pretrain":
        args = ["pretrain", "--spectral", cut, "--sar", scene["sar"], "--profile", "fast", "--steps", "1",
                "--device", "cpu", "--model", out / "d.bdgf", "--features", out / "f.tif"]
    else:
        args = ["train", "--spectral", cut, "--sar", scene["sar"], "--groundtruth", scene["groundtruth"],
                "--no-guide-cnn", "--no-guide-transformer", "--no-guide-mamba", "--epochs", "1",
                "--device", "cpu", "--model", out / "b.bdgf"]
    refused(args, "cannot read rows", "spectral raster cut.tif", "check that the file", out=out)


# --- refusals ------------------------------------------------------------------------------------

def test_a_single_class_is_refused(scene, out, tmp_path):
    one = write_polygons(tmp_path / "one.gpkg", [(box(0, 0, 10, 10), 3), (box(20, 20, 30, 30), 3)])
    refused(baseline(scene, out, **{"--groundtruth": one}), "one.gpkg has 1 class", "'class 3' (code 3)",
            "needs at least two", out=out)


def test_a_complex_raster_is_refused_with_the_amplitude_hint(scene, out, tmp_path):
    a = gdal.Open(str(scene["sar"])).ReadAsArray()
    p = tmp_path / "slc.tif"
    ds = gdal.GetDriverByName("GTiff").Create(str(p), 32, 32, 2, gdal.GDT_CFloat32)
    ds.SetGeoTransform((X0, PX, 0.0, Y0, 0.0, -PX))
    ds.SetProjection(gdal.Open(str(scene["sar"])).GetProjection())
    for i in range(2):
        ds.GetRasterBand(i + 1).WriteArray(a[i] * (1 + 1j))
    ds = None
    refused(baseline(scene, out, **{"--sar": p}), "SAR raster slc.tif holds complex values (CFloat32)",
            "take the amplitude first", "gdal_calc", out=out)


def test_features_are_still_required_when_guidance_is_on(scene, out):
    refused(["train", "--spectral", scene["spectral"], "--sar", scene["sar"], "--groundtruth", scene["groundtruth"],
             "--epochs", "1", "--device", "cpu", "--model", out / "b.bdgf"],
            "no feature raster was given", "--features", "--no-guide-cnn --no-guide-transformer --no-guide-mamba",
            out=out)


# --- class fields and label rasters --------------------------------------------------------------

def _layer(path: Path, rows, fields) -> Path:
    """A GeoPackage of boxes on the scene's grid; ``fields``: [(name, OGR type)], rows: [(box, values...)]."""
    from osgeo import osr

    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32632)
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    lyr = ds.CreateLayer("truth", srs, ogr.wkbPolygon)
    for name, t in fields:
        lyr.CreateField(ogr.FieldDefn(name, t))
    for (x0, y0, x1, y1), *values in rows:
        f = ogr.Feature(lyr.GetLayerDefn())
        f.SetGeometry(ogr.CreateGeometryFromWkt(f"POLYGON(({x0} {y0},{x1} {y0},{x1} {y1},{x0} {y1},{x0} {y0}))"))
        for (name, _), v in zip(fields, values):
            f.SetField(name, v)
        lyr.CreateFeature(f)
    ds = None
    return path


@pytest.mark.parametrize("ftype, values", [(ogr.OFTReal, [10.0, 20.0]), (ogr.OFTString, ["10", "20"]),
                                           (ogr.OFTInteger64, [10, 20])], ids=["real", "text", "int64"])
def test_whole_numbers_of_any_field_type_are_codes_named_by_the_name_field(scene, tmp_path, ftype, values):
    p = _layer(tmp_path / "scp.gpkg", [(box(0, 0, 4, 4), values[0], "water"), (box(8, 8, 12, 12), values[1], "crop"),
                                       (box(20, 0, 24, 4), values[0], "water")],
               [("MC_ID", ftype), ("MC_info", ogr.OFTString)])
    gt = load_ground_truth(p, grid_of(scene), "MC_ID", class_name_field="MC_info")
    assert [(c.code, c.name) for c in gt.classes] == [(10, "water"), (20, "crop")]
    assert gt.labels[0, 0] == 10 and gt.labels[9, 9] == 20 and gt.labels[0, 31] == gt.unlabelled


def test_a_code_with_two_names_is_refused_naming_both(scene, tmp_path):
    p = _layer(tmp_path / "scp.gpkg", [(box(0, 0, 4, 4), 1, "water"), (box(8, 8, 12, 12), 1, "lake")],
               [("MC_ID", ogr.OFTInteger), ("MC_info", ogr.OFTString)])
    with pytest.raises(BdgfError, match="class code 1 has two names in scp.gpkg, 'water' and 'lake'"):
        load_ground_truth(p, grid_of(scene), "MC_ID", class_name_field="MC_info")
    with pytest.raises(BdgfError, match="class name field 'info' is not in scp.gpkg"):
        load_ground_truth(p, grid_of(scene), "MC_ID", class_name_field="info")


def test_text_that_is_not_a_number_stays_a_name(scene, tmp_path):
    p = _layer(tmp_path / "n.gpkg", [(box(0, 0, 4, 4), "2b"), (box(8, 8, 12, 12), "10")], [("lc", ogr.OFTString)])
    gt = load_ground_truth(p, grid_of(scene), "lc")
    assert sorted(c.name for c in gt.classes) == ["10", "2b"] and {c.code for c in gt.classes} == {1, 2}


def _flood(scene, folder: Path, nodata: float | None) -> tuple[Path, np.ndarray]:
    """A flood map on the scene's grid: 1 = water (the scene's class 1), 0 = dry (its other classes),
    -1 elsewhere (nodata when ``nodata`` is -1)."""
    lab = scene_labels(scene)
    flood = np.where(lab == 1, 1, np.where(lab > 0, 0, -1)).astype(np.float32)
    g = grid_of(scene)
    return write_raster(folder / "flood.tif", flood, g.geotransform, g.crs_wkt, nodata=nodata), flood


def test_label_raster_unlabelled_is_its_nodata_else_the_given_value_else_0(scene, tmp_path):
    g = grid_of(scene)
    p, flood = _flood(scene, tmp_path, nodata=-1)
    gt = load_ground_truth(p, g)
    assert [c.code for c in gt.classes] == [0, 1]  # 0 = dry is a class: the nodata (-1) is unlabelled
    assert (gt.labelled == (flood >= 0)).all() and (gt.labels[flood == 0] == 0).all()
    (tmp_path / "b").mkdir()
    p, _ = _flood(scene, tmp_path / "b", nodata=None)
    assert [c.code for c in load_ground_truth(p, g, unlabelled_value=-1).classes] == [0, 1]
    # no nodata, no value given: 0 is unlabelled, and -1 is a class like any other value
    assert [c.code for c in load_ground_truth(p, g).classes] == [-1, 1]


@pytest.mark.slow
@pytest.mark.parametrize("case", ["flood 0/1", "codes -5 and 300"])
def test_classes_coded_0_negative_or_above_255_give_a_correct_map(scene, out, tmp_path, case):
    """The map holds the ground truth's own codes, its nodata is none of them, the .qml lists exactly the
    classes, and assess scores every class (a class coded 0 included)."""
    if case == "flood 0/1":
        gt_path, _ = _flood(scene, tmp_path, nodata=-1)
        codes, want_type, want_nodata = [0, 1], "Byte", 255
    else:
        lab = scene_labels(scene)
        rows = []
        for r in range(0, 32, 4):
            for c in range(0, 32, 4):
                k = np.bincount(lab[r:r + 4, c:c + 4].ravel(), minlength=8)[1:]
                if k.max() == 16:  # a block of one class only
                    rows.append((box(c, r, c + 4, r + 4), -5 if k.argmax() == 0 else 300))
        gt_path = write_polygons(tmp_path / "odd.gpkg", rows)
        codes, want_type, want_nodata = [-5, 300], "Int16", -32768
    ok(*baseline(scene, out, **{"--groundtruth": gt_path, "--samples-per-class": "20"}))
    # nodata in the inputs must come out as the map's nodata, not as a class
    spec = gdal.Open(str(scene["spectral"])).ReadAsArray().astype(np.float32)
    spec[:, 0, 0] = np.nan
    holed = write_raster(tmp_path / "holed.tif", spec, *(lambda g: (g.geotransform, g.crs_wkt))(grid_of(scene)))
    res = ok("classify", "--model", out / "m.bdgf", "--spectral", holed, "--sar", scene["sar"], "--out", out / "map.tif")
    ds = gdal.Open(res["map"])
    band = ds.GetRasterBand(1)
    assert gdal.GetDataTypeName(band.DataType) == want_type and band.GetNoDataValue() == want_nodata
    m = band.ReadAsArray()
    assert m[0, 0] == want_nodata and set(np.unique(m[1:, 1:]).tolist()) <= set(codes)
    assert set(np.unique(m).tolist()) - {want_nodata} == set(codes)  # both classes predicted somewhere
    qml = Path(res["style"]).read_text()
    assert [int(v) for v in re.findall(r'paletteEntry value="(-?\d+)"', qml)] == codes
    assert Path(res["style"]) == Path(res["map"]).with_suffix(".qml")  # where QGIS looks for a layer's style
    a = ok("assess", "--map", res["map"], "--groundtruth", gt_path, "--report", out / "a.html", "--json", out / "a.json")
    import json

    per_class = json.loads((out / "a.json").read_text())
    assert a["oa"] > 50 and str(codes[0]) in json.dumps(per_class)


# --- several files, SAR resampling ---------------------------------------------------------------

def _split_bands(path: Path, folder: Path, groups: list[list[int]]) -> list[Path]:
    out = []
    for k, bands in enumerate(groups):
        p = folder / f"{path.stem}_{k}.tif"
        gdal.Translate(str(p), str(path), bandList=[b + 1 for b in bands])
        out.append(p)
    return out


@pytest.mark.slow
def test_several_files_are_stacked_in_the_order_given(scene, out, tmp_path):
    """VV and VH as two files, the spectral bands in two files: the same model and map as one file each."""
    vv, vh = _split_bands(Path(scene["sar"]), tmp_path, [[0], [1]])
    s1, s2 = _split_bands(Path(scene["spectral"]), tmp_path, [[0, 1, 2], [3, 4, 5]])
    one = ok(*baseline(scene, out, name="one.bdgf"))
    two = ok(*baseline(scene, out, name="two.bdgf", **{"--sar": [vv, vh], "--spectral": [s1, s2]}))
    assert one["test_oa"] == two["test_oa"]
    maps = []
    for name, spec, sar in (("one", [scene["spectral"]], [scene["sar"]]), ("two", [s1, s2], [vv, vh])):
        r = ok("classify", "--model", out / f"{name}.bdgf", "--spectral", *spec, "--sar", *sar, "--out", out / f"{name}.tif")
        maps.append(gdal.Open(r["map"]).ReadAsArray())
    assert np.array_equal(maps[0], maps[1])
    # the model checks the stacked band count: VV alone is refused
    refused(["classify", "--model", out / "two.bdgf", "--spectral", s1, s2, "--sar", vv, "--out", out / "x.tif"],
            "trained on a SAR raster of 2 bands, but this one has 1", out=out)
    from bdgf_core.raster import open_stack

    stack = open_stack([vh, vv], what="SAR raster")
    assert np.array_equal(stack.read(), RasterSource(scene["sar"]).read()[::-1])


def _db_sar(scene, folder: Path, pixel: float) -> tuple[Path, np.ndarray]:
    """A 2-band SAR in dB on a grid of ``pixel`` metres over the scene, and its linear power."""
    g = grid_of(scene)
    n = int(round(32 * PX / pixel))
    power = np.random.default_rng(1).gamma(1.0, 0.1, (2, n, n)).astype(np.float32)
    p = write_raster(folder / f"sar_{pixel:g}m_db.tif", 10 * np.log10(power), (X0, pixel, 0.0, Y0, 0.0, -pixel),
                     g.crs_wkt)
    return p, power


def test_finer_sar_is_averaged_in_linear_power_coarser_is_interpolated(scene, tmp_path):
    g = grid_of(scene)
    fine, power = _db_sar(scene, tmp_path, 5.0)
    said = []
    auto = RasterSource(fine, g, "SAR raster", "auto", log=said.append).read()
    looks = 10 * np.log10(power.reshape(2, 32, 2, 32, 2).mean((2, 4)))  # 2 x 2 looks in power, back to dB
    np.testing.assert_allclose(auto, looks, atol=1e-4)
    assert "average in linear power" in said[0]
    np.testing.assert_allclose(RasterSource(fine, g, "SAR raster", "average").read(), looks, atol=1e-4)
    assert np.abs(RasterSource(fine, g, "SAR raster", "bilinear").read() - looks).max() > 1.0
    coarse, _ = _db_sar(scene, tmp_path, 20.0)
    said.clear()
    RasterSource(coarse, g, "SAR raster", "auto", log=said.append).read()
    assert "resampled (bilinear)" in said[0]


def test_linear_sar_is_averaged_as_it_is(scene, tmp_path):
    g = grid_of(scene)
    power = np.random.default_rng(2).gamma(1.0, 0.1, (1, 64, 64)).astype(np.float32)
    p = write_raster(tmp_path / "sar_lin.tif", power, (X0, 5.0, 0.0, Y0, 0.0, -5.0), g.crs_wkt)
    got = RasterSource(p, g, "SAR raster", "auto").read()
    np.testing.assert_allclose(got, power.reshape(1, 32, 2, 32, 2).mean((2, 4)), rtol=1e-5)


@pytest.mark.slow
def test_the_model_records_the_sar_resampling_and_classify_uses_it(scene, out, tmp_path):
    from bdgf_core.modelfile import read_meta

    fine, _ = _db_sar(scene, tmp_path, 5.0)
    ok(*baseline(scene, out, "--sar-resampling", "bilinear", **{"--sar": fine}))
    assert read_meta(out / "m.bdgf")["inputs"]["sar_resampling"] == "bilinear"
    maps = {}
    for how in ([], ["--sar-resampling", "bilinear"], ["--sar-resampling", "average"]):
        r = ok("classify", "--model", out / "m.bdgf", "--spectral", scene["spectral"], "--sar", fine, *how,
               "--out", out / f"map{len(maps)}.tif")
        maps[" ".join(how)] = gdal.Open(r["map"]).ReadAsArray()
    assert np.array_equal(maps[""], maps["--sar-resampling bilinear"])
    assert not np.array_equal(maps[""], maps["--sar-resampling average"])


# --- the style QGIS applies ------------------------------------------------------------------------

@pytest.mark.parametrize("codes, names", [([0, 1], ["dry", "water"]), ([-5, 300], ["lake", "crop"])],
                         ids=["0 and 1", "-5 and 300"])
def test_qgis_draws_the_map_with_the_qml_beside_it(qgis_app, tmp_path, codes, names):
    """QGIS opens the map with the .qml written beside it: a paletted legend of exactly the classes
    (no entry for the nodata value or for unused values), whatever the codes."""
    from qgis.core import QgsRasterLayer

    from bdgf_core.groundtruth import ClassInfo
    from bdgf_core.inference import write_qml
    from bdgf_core.raster import class_map_encoding, create_raster

    gtype, nodata = class_map_encoding(codes)
    grid = Grid(4, 4, (X0, PX, 0.0, Y0, 0.0, -PX), "")
    a = np.array([[codes[0]] * 4, [codes[1]] * 4, [nodata] * 4, [codes[0]] * 4], np.int32)
    dest = tmp_path / "map.tif"
    with create_raster(dest, grid, 1, gtype, nodata, ["class"]) as w:
        w.write(0, 0, a)
        w.set_categories(codes, names, ["#0000ff", "#00ff00"])
    write_qml(dest.with_suffix(".qml"), [ClassInfo(c, n, "#123456") for c, n in zip(codes, names)])
    layer = QgsRasterLayer(str(dest), "map", "gdal")
    assert layer.isValid() and layer.renderer().type() == "paletted"
    assert [(int(c.value), c.label) for c in layer.renderer().classes()] == list(zip(codes, names))


def test_a_label_raster_on_another_grid_leaves_the_rest_unlabelled(scene, tmp_path):
    """Where a label raster on another grid does not reach, nothing is labelled, even when 0 is a class."""
    g = grid_of(scene)
    lab = np.zeros((8, 8), np.float32)
    lab[:, 4:] = 1
    # 5 m pixels over the scene's top-left 4 x 4 pixels only
    p = write_raster(tmp_path / "small.tif", lab, (X0, 5.0, 0.0, Y0, 0.0, -5.0), g.crs_wkt)
    gt = load_ground_truth(p, g, unlabelled_value=-1)
    assert [c.code for c in gt.classes] == [0, 1]
    assert gt.labelled[:4, :4].all() and not gt.labelled[4:].any() and not gt.labelled[:, 4:].any()
    assert (gt.labels[:4, :2] == 0).all() and (gt.labels[:4, 2:4] == 1).all()

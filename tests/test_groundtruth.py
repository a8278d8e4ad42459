import numpy as np
import pytest
from osgeo import ogr, osr

from bdgf_core.errors import BdgfError
from bdgf_core.groundtruth import load_ground_truth
from bdgf_core.raster import Grid, RasterSource, write_array


def _grid():
    s = osr.SpatialReference(); s.ImportFromEPSG(32632)
    return Grid(10, 10, (0.0, 1.0, 0.0, 10.0, 0.0, -1.0), s.ExportToWkt())


def _polys(path, feats, epsg=32632, field_type=ogr.OFTInteger, field="class"):
    srs = osr.SpatialReference(); srs.ImportFromEPSG(epsg)
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    lyr = ds.CreateLayer("gt", srs=srs, geom_type=ogr.wkbPolygon)
    lyr.CreateField(ogr.FieldDefn(field, field_type))
    for wkt, v in feats:
        f = ogr.Feature(lyr.GetLayerDefn())
        f.SetGeometry(ogr.CreateGeometryFromWkt(wkt))
        if v is not None:
            f.SetField(field, v)
        lyr.CreateFeature(f)
    ds = None
    return path


def box(x0, y0, x1, y1):
    return f"POLYGON(({x0} {y0},{x1} {y0},{x1} {y1},{x0} {y1},{x0} {y0}))"


def test_rasterise_codes_and_regions(tmp_path):
    p = _polys(tmp_path / "gt.gpkg", [(box(0, 8, 4, 10), 2), (box(5, 0, 10, 3), 1), (box(0, 0, 2, 2), 2)])
    gt = load_ground_truth(p, _grid())
    # box(0,8,4,10) covers rows 0-1, cols 0-3 (north-up, 1 m pixels, origin y=10)
    assert (gt.labels[0:2, 0:4] == 2).all()
    assert (gt.labels[7:10, 5:10] == 1).all()
    assert gt.counts() == {1: 15, 2: 8 + 4}
    # each polygon is its own region, even two polygons of one class
    assert len(np.unique(gt.regions[gt.labels == 2])) == 2
    assert [c.code for c in gt.classes] == [1, 2]


def test_class_names_become_codes(tmp_path):
    p = _polys(tmp_path / "gt.gpkg", [(box(0, 0, 5, 5), "water"), (box(5, 5, 10, 10), "forest")],
               field_type=ogr.OFTString, field="landcover")
    gt = load_ground_truth(p, _grid(), "landcover")
    names = {c.code: c.name for c in gt.classes}
    assert names == {1: "forest", 2: "water"}
    assert gt.labels[9, 0] == 2 and gt.labels[0, 9] == 1


def test_polygons_in_another_crs_are_reprojected(tmp_path):
    s32 = osr.SpatialReference(); s32.ImportFromEPSG(32632)
    g = Grid(20, 20, (500000.0, 10.0, 0.0, 5000200.0, 0.0, -10.0), s32.ExportToWkt())
    s4326 = osr.SpatialReference(); s4326.ImportFromEPSG(4326)
    s4326.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    s32.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    ct = osr.CoordinateTransformation(s32, s4326)
    (x0, y0, _), (x1, y1, _) = ct.TransformPoint(500050.0, 5000050.0), ct.TransformPoint(500150.0, 5000150.0)
    p = _polys(tmp_path / "gt.gpkg", [(box(x0, y0, x1, y1), 3)], epsg=4326)
    gt = load_ground_truth(p, g)
    rows, cols = np.nonzero(gt.labels == 3)
    assert 80 <= rows.size <= 120
    assert abs(rows.mean() - 10) < 1.5 and abs(cols.mean() - 10) < 1.5


def test_missing_field_empty_field_and_outside_polygons(tmp_path):
    p = _polys(tmp_path / "a.gpkg", [(box(0, 0, 5, 5), 1)])
    with pytest.raises(BdgfError, match="'kind' is not in"):
        load_ground_truth(p, _grid(), "kind")
    p = _polys(tmp_path / "b.gpkg", [(box(0, 0, 5, 5), None)])
    with pytest.raises(BdgfError, match="is empty"):
        load_ground_truth(p, _grid())
    p = _polys(tmp_path / "c.gpkg", [(box(100, 100, 105, 105), 1)])
    with pytest.raises(BdgfError, match="covers a pixel"):
        load_ground_truth(p, _grid())


def test_label_raster_regions_are_connected_components(tmp_path):
    lab = np.zeros((10, 10), np.uint8)
    lab[0:3, 0:3] = 1
    lab[6:9, 6:9] = 1
    lab[0:2, 7:9] = 2
    p = write_array(tmp_path / "lab.tif", lab, _grid(), data_type=None)
    gt = load_ground_truth(p, _grid())
    assert gt.counts() == {1: 18, 2: 4}
    assert len(np.unique(gt.regions[gt.labels == 1])) == 2


def test_scene_ground_truth_matches_raster(small_scene):
    src = RasterSource(small_scene.spectral)
    gt = load_ground_truth(small_scene.groundtruth, src.grid)
    assert gt.labels.shape == (48, 48)
    assert set(gt.counts()) <= set(range(1, 8)) and len(gt.counts()) >= 5
    assert [c.name for c in gt.classes][:2] == ["water", "forest"]


def test_second_layer_with_class_names_takes_the_first_layers_codes(tmp_path):
    first = load_ground_truth(_polys(tmp_path / "a.gpkg", [(box(0, 0, 5, 5), "water"), (box(5, 5, 10, 10), "forest")],
                                     field_type=ogr.OFTString, field="lc"), _grid(), "lc")
    # the test layer lacks 'forest' and adds 'grass': sorted alone it would code water 2 -> 1
    p = _polys(tmp_path / "b.gpkg", [(box(0, 0, 3, 3), "water"), (box(6, 6, 9, 9), "grass")],
               field_type=ogr.OFTString, field="lc")
    second = load_ground_truth(p, _grid(), "lc", classes=first.classes)
    codes = {c.name: c.code for c in second.classes}
    assert codes == {"water": 2, "grass": 3}
    assert second.labels[9, 0] == 2


def test_numeric_codes_take_known_names(tmp_path):
    from bdgf_core.groundtruth import ClassInfo

    p = _polys(tmp_path / "a.gpkg", [(box(0, 0, 5, 5), 4)])
    gt = load_ground_truth(p, _grid(), classes=[ClassInfo(4, "meadow", "#123456")])
    assert [(c.code, c.name, c.color) for c in gt.classes] == [(4, "meadow", "#123456")]


def test_label_raster_regions_are_8_connected_and_categories_name_classes(tmp_path):
    from bdgf_core.raster import create_raster
    from osgeo import gdal

    lab = np.zeros((10, 10), np.uint8)
    lab[0:2, 0:2] = 1
    lab[2:4, 2:4] = 1   # touches the first square at a corner only: one region
    lab[7:9, 7:9] = 1
    lab[5, 0] = 2
    p = tmp_path / "lab.tif"
    with create_raster(p, _grid(), 1, gdal.GDT_Byte, 0) as w:
        w.write(0, 0, lab)
        w.set_categories([1, 2], ["Forest", "Water"], ["#112233", "#445566"])
    gt = load_ground_truth(p, _grid())
    assert len(np.unique(gt.regions[gt.labels == 1])) == 2
    assert [(c.code, c.name, c.color) for c in gt.classes] == [(1, "Forest", "#112233"), (2, "Water", "#445566")]


def test_label_raster_with_fractions_or_too_many_values_is_refused(tmp_path):
    img = np.linspace(0, 3, 100, dtype=np.float32).reshape(10, 10)
    p = write_array(tmp_path / "img.tif", img, _grid())
    with pytest.raises(BdgfError, match="fractional"):
        load_ground_truth(p, _grid())
    many = np.arange(400, dtype=np.int32).reshape(20, 20)
    g = Grid(20, 20, (0.0, 1.0, 0.0, 20.0, 0.0, -1.0), _grid().crs_wkt)
    p = write_array(tmp_path / "many.tif", many, g)
    with pytest.raises(BdgfError, match="distinct values"):
        load_ground_truth(p, g)


def test_merge_fixed_keeps_training_labels_and_adds_known_test_labels():
    from bdgf_core.groundtruth import ClassInfo, GroundTruth, merge_fixed

    tr = np.zeros((4, 4), np.int32); tr[0, :2] = 1; tr[1, :2] = 2
    te = np.zeros((4, 4), np.int32); te[0, 0] = 2; te[3, :] = 1; te[2, 0] = 5
    cls = [ClassInfo(1, "a", "#000000"), ClassInfo(2, "b", "#000000")]
    m = merge_fixed(GroundTruth(tr, (tr > 0).astype(np.int32), cls), GroundTruth(te, (te > 0) * 7, cls))
    assert m.labels[0, 0] == 1 and (m.labels[3] == 1).all() and m.labels[2, 0] == 0
    assert m.regions[3, 0] == 1 + 7 and m.classes == cls

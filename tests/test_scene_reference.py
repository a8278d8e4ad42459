"""The synthetic scene's full reference map: every pixel's true class, for whole-map scoring."""
import numpy as np
import pytest
from osgeo import gdal

from bdgf_core.groundtruth import known_classes, load_ground_truth
from bdgf_core.raster import RasterSource
from bdgf_core.scene import CLASSES, generate_scene


@pytest.mark.parametrize("variant", ["standard", "hard"])
def test_scene_writes_a_reference_that_labels_every_pixel_and_agrees_with_the_polygons(tmp_path, variant):
    s = generate_scene(tmp_path, size=40, bands=6, seed=1, variant=variant)
    assert s.reference == tmp_path / "reference.tif"
    ds = gdal.Open(str(s.reference))
    ref = ds.ReadAsArray()
    grid = RasterSource(s.spectral).grid
    assert ref.shape == (40, 40) and ds.GetGeoTransform() == grid.geotransform
    assert ref.min() >= 1 and ref.max() <= len(CLASSES)  # every pixel has its class
    gt = load_ground_truth(s.groundtruth, grid)
    lab = gt.labels > 0
    assert lab.sum() > 0 and np.array_equal(ref[lab], gt.labels[lab])
    # the polygons stop short of class borders: the reference holds pixels they leave out
    assert (~lab).sum() > 0.1 * lab.size
    assert [c.name for c in known_classes(s.reference)] == [c[0] for c in CLASSES]

"""Run by tests/test_clean_exit.py in a child pytest: leaves a GDAL dataset in a reference cycle."""
import gc


def test_leave_a_dataset_in_a_cycle(tmp_path):
    from osgeo import gdal

    from bdgf_core.raster import RasterSource

    gdal.GetDriverByName("GTiff").Create(str(tmp_path / "x.tif"), 4, 4, 1).FlushCache()
    src = RasterSource(tmp_path / "x.tif")
    src.me = src  # only the cycle collector frees it
    gc.disable()  # not before the session ends

"""First use of a plugin installed from a zip, without a runtime: the message says what to install."""
from __future__ import annotations

import pytest
from qgis.core import QgsProcessingException

from bdgf_qgis import runtime


def test_missing_runtime_says_what_to_install_and_where_to_point(tmp_path, monkeypatch):
    monkeypatch.setattr(runtime, "plugin_dir", lambda: tmp_path)  # a plugin folder without .venv
    monkeypatch.delenv("BDGF_PYTHON", raising=False)
    monkeypatch.setattr(runtime, "_setting_value", lambda: "")
    with pytest.raises(QgsProcessingException) as err:
        runtime.find_python()
    message = str(err.value)
    for needed in ("PyTorch", "GDAL", "make setup", "conda create", "BDGF_PYTHON", "Settings > Options"):
        assert needed in message, needed
    assert str(tmp_path) in message  # where it looked

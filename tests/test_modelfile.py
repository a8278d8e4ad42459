import json
import os
import struct

import numpy as np
import pytest

from bdgf_core.errors import BdgfError
from bdgf_core.modelfile import load_model, read_meta, save_model


def test_round_trip(tmp_path):
    p = save_model(tmp_path / "m.bdgf", "baseline", {"w": np.arange(6, dtype=np.float32).reshape(2, 3)},
                   {"classes": [{"code": 1, "name": "wätér", "color": "#000000"}]})
    t, meta = load_model(p, "baseline")
    np.testing.assert_array_equal(t["w"], np.arange(6).reshape(2, 3))
    assert meta["kind"] == "baseline" and meta["classes"][0]["name"] == "wätér"
    assert read_meta(p)["format"] == "bdgf-model"


def test_wrong_kind_truncated_foreign_and_missing(tmp_path):
    p = save_model(tmp_path / "m.bdgf", "baseline", {"w": np.zeros(1000, np.float32)}, {})
    with pytest.raises(BdgfError, match="is a baseline model, but a diffusion model"):
        load_model(p, "diffusion")
    data = p.read_bytes()
    (tmp_path / "t.bdgf").write_bytes(data[: len(data) // 2])
    with pytest.raises(BdgfError, match="truncated|damaged"):
        load_model(tmp_path / "t.bdgf")
    (tmp_path / "x.bdgf").write_bytes(b"PK\x03\x04 a zip, not a model")
    with pytest.raises(BdgfError, match="not a BDGF model"):
        load_model(tmp_path / "x.bdgf")
    with pytest.raises(BdgfError, match="does not exist"):
        load_model(tmp_path / "none.bdgf")


def test_foreign_safetensors_is_refused(tmp_path):
    from safetensors.numpy import save_file

    save_file({"w": np.zeros(3, np.float32)}, str(tmp_path / "f.safetensors"), metadata={"x": "y"})
    with pytest.raises(BdgfError, match="not a BDGF model"):
        load_model(tmp_path / "f.safetensors")


def test_a_pickle_crafted_to_run_code_is_refused_without_running_it(tmp_path):
    """A torch/pickle file whose loading would create a marker file: we must refuse it, unrun."""
    import pickle

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    p = tmp_path / "evil.bdgf"
    p.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(BdgfError, match="not a BDGF model"):
        load_model(p)
    assert not marker.exists()


def test_metadata_claiming_a_newer_format_is_refused(tmp_path):
    from safetensors.numpy import save_file

    meta = {"format": "bdgf-model", "version": 99, "kind": "bdgf"}
    save_file({"w": np.zeros(1, np.float32)}, str(tmp_path / "n.bdgf"), metadata={"bdgf": json.dumps(meta)})
    with pytest.raises(BdgfError, match="newer version"):
        load_model(tmp_path / "n.bdgf")

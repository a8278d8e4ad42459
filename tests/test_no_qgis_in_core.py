"""bdgf_core must run without QGIS and bdgf_qgis must never load torch (QGIS's Python)."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _imports(folder: str) -> dict[str, set[str]]:
    found = {}
    for f in (ROOT / folder).rglob("*.py"):
        mods = set()
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                mods |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                mods.add(node.module.split(".")[0])
        found[str(f.relative_to(ROOT))] = mods
    return found


def test_core_never_imports_qgis():
    bad = {f: m & {"qgis", "PyQt5", "PyQt6", "processing"} for f, m in _imports("bdgf_core").items()}
    assert len(_imports("bdgf_core")) > 10
    assert not {f: m for f, m in bad.items() if m}


def test_plugin_never_imports_torch_or_the_core():
    files = _imports("bdgf_qgis")
    bad = {f: m & {"torch", "bdgf_core", "numpy", "sklearn"} for f, m in files.items()}
    assert files
    assert not {f: m for f, m in bad.items() if m}

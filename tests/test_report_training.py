"""The training report's charts and the confusion heat map (issue 17): labelled axes, the kept epoch,
visible errors, no cut labels."""
from __future__ import annotations

import re

import numpy as np

from bdgf_core.report import chart_svg, confusion_svg, nice_ticks, training_section


def _y_of(svg: str, label: str) -> float:
    """The y position of the y-axis tick labelled ``label``."""
    m = re.search(rf'<text x="[\d.]+" y="([\d.]+)" text-anchor="end" fill="#555">{re.escape(label)}</text>', svg)
    assert m, f"no y tick {label!r}"
    return float(m.group(1)) - 4


def _points(svg: str) -> list[list[tuple[float, float]]]:
    return [[tuple(map(float, p.split(","))) for p in m.split()] for m in re.findall(r'points="([^"]+)"', svg)]


def test_nice_ticks_cover_the_range_with_round_steps() -> None:
    assert nice_ticks(0, 1) == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert nice_ticks(0, 7) == [0.0, 2.0, 4.0, 6.0, 8.0]
    t = nice_ticks(90, 100)
    assert t[0] <= 90 and t[-1] >= 100 and len(t) <= 7
    t = nice_ticks(0.013, 2.37)
    assert t[0] <= 0.013 and t[-1] >= 2.37


def test_chart_has_a_labelled_y_axis_shared_by_its_curves_and_marks_the_kept_epoch() -> None:
    svg = chart_svg({"a": [0.5, 1.0, 2.0], "b": [1.0, 1.0, 1.0]}, "loss", marker=1)
    assert ">loss</text>" in svg and ">epoch</text>" in svg
    zero, two = _y_of(svg, "0.0"), _y_of(svg, "2.0")
    a, b = _points(svg)
    # one scale: the value 1.0 sits at the same height in both curves, halfway between 0 and 2
    assert a[1][1] == b[0][1] == b[2][1]
    assert abs(a[1][1] - (zero + two) / 2) < 0.2 and abs(a[2][1] - two) < 0.2
    assert "kept epoch 2" in svg and "stroke-dasharray" in svg


def test_validation_oa_from_91_to_100_percent_does_not_fill_the_chart() -> None:
    svg = chart_svg({"validation OA": [91.0, 95.0, 100.0]}, "OA %", y_min=90.0, y_max=100.0)
    (pts,) = _points(svg)
    y90, y100 = _y_of(svg, "90.0"), _y_of(svg, "100.0")
    assert abs(pts[2][1] - y100) < 0.2
    assert abs(pts[0][1] - (y90 + 0.1 * (y100 - y90))) < 0.2  # 91 % is one tenth up, not the bottom


def test_confusion_small_errors_are_visible_and_labels_fit() -> None:
    names = ["water", "forest", "a rather long class name at the end"]
    cm = np.array([[990, 10, 0], [0, 500, 0], [0, 0, 300]])
    svg = confusion_svg(cm, names)
    fills = re.findall(r'<rect x="[\d.]+" y="[\d.]+" width="\d+" height="\d+" fill="([^"]+)"', svg)
    rgb = [tuple(map(int, re.findall(r"\d+", f))) if f.startswith("rgb") else (255, 255, 255) for f in fills]
    assert min(rgb[1]) <= 215, rgb[1]  # 1 % of water taken for forest: clearly tinted
    assert rgb[2] == (255, 255, 255)  # no error, no tint
    assert rgb[1] != rgb[4]  # errors and correct pixels in different hues
    width = float(re.search(r'<svg [^>]*width="(\d+)"', svg).group(1))
    m = re.findall(r'<text transform="translate\(([\d.]+),([\d.]+)\) rotate\(-60\)">([^<]+)</text>', svg)
    x, y, text = m[-1]
    assert float(x) + 0.5 * 0.55 * 11 * len(text) <= width  # the last column's label leans right, inside
    assert float(y) - 0.87 * 0.55 * 11 * len(text) >= 0  # and rises, inside


def test_training_section_draws_terms_temperatures_validation_and_warnings() -> None:
    hist = {"loss": [2.0, 1.5, 1.2], "val_oa": [0.91, 0.95, 0.94], "best_epoch": 1, "seconds": 10.0,
            "val_seconds": 1.5, "val_pixels": 500, "val_pixels_given": 2400,
            "terms": {"ce": [1.0, 0.8, 0.7], "kl_ct": [0.3, 0.2, 0.1], "T_kl_ct": [2.0, 2.1, 2.2]},
            "warnings": ["validation OA <fell>"]}
    html = training_section(hist)
    assert html.count("<svg") == 4  # loss, KL terms, temperatures, validation OA
    assert "validation OA &lt;fell&gt;" in html and 'class="warn"' in html
    assert "500 of the 2400 validation pixels" in html and "15 % of it" in html
    assert html.count("kept epoch 2") == 4
    html = training_section({**hist, "val_loss": [0.4, 0.2, 0.3]})
    assert html.count("<svg") == 5 and "validation loss" in html and html.count("kept epoch 2") == 5

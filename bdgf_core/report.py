"""HTML reports a person reads: accuracy tables, the confusion matrix as a table and a picture."""
from __future__ import annotations

import html
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_output

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1000px;margin:2em auto;
color:#222;padding:0 1em;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em} h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
.kpi{display:flex;gap:1em;margin:1em 0}.kpi div{background:#f4f6f8;border-radius:8px;padding:.7em 1.2em}
.kpi b{display:block;font-size:1.6em}
table{border-collapse:collapse;font-size:.9em;margin:.5em 0}td,th{border:1px solid #ddd;padding:.25em .55em;
text-align:right}th{background:#f4f6f8}td.l,th.l{text-align:left}.sw{display:inline-block;width:.9em;
height:.9em;border-radius:2px;margin-right:.4em;vertical-align:middle}.muted{color:#777;font-size:.9em}
.warn{background:#fff6e0;border-left:4px solid #e6a700;padding:.5em 1em}
"""


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "–"
    return f"{v:.2f}" if isinstance(v, float) else html.escape(str(v))


def confusion_svg(cm: np.ndarray, names: list[str]) -> str:
    """The confusion matrix as an SVG heat map, rows normalised (producer's view)."""
    k = len(names)
    cell = max(18, min(42, 480 // max(k, 1)))
    left, top = 150, 150
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = cm / cm.sum(1, keepdims=True)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + k * cell + 10}" height="{top + k * cell + 10}" '
             'font-family="sans-serif" font-size="11">']
    for i in range(k):
        y = top + i * cell
        parts.append(f'<text x="{left - 6}" y="{y + cell * .65}" text-anchor="end">{html.escape(names[i])}</text>')
        x = left + i * cell + cell * .6
        parts.append(f'<text transform="translate({x},{top - 6}) rotate(-60)">{html.escape(names[i])}</text>')
        for j in range(k):
            f = frac[i, j] if np.isfinite(frac[i, j]) else 0.0
            shade = int(255 - 200 * f)
            fill = f"rgb({shade},{shade + (255 - shade) // 3},255)" if i != j else f"rgb({shade},{255},{shade})"
            parts.append(f'<rect x="{left + j * cell}" y="{y}" width="{cell}" height="{cell}" fill="{fill}" '
                         f'stroke="#fff"><title>{html.escape(names[i])} → {html.escape(names[j])}: '
                         f'{int(cm[i, j])} ({f * 100:.1f}%)</title></rect>')
    parts.append(f'<text x="{left}" y="{top + k * cell + 9}" fill="#777">reference (rows) × predicted (columns)</text>')
    parts.append("</svg>")
    return "".join(parts)


def curves_svg(series: dict[str, list[float]], width: int = 560, height: int = 220) -> str:
    """Line chart of per-epoch curves, each scaled to its own range (a legend gives the ranges)."""
    colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"]
    left, right, top, bottom = 40, 10, 10, 30
    n = max((len(v) for v in series.values()), default=0)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 20 * len(series)}" '
             'font-family="sans-serif" font-size="11">',
             f'<rect x="{left}" y="{top}" width="{width - left - right}" height="{height - top - bottom}" '
             'fill="none" stroke="#ccc"/>',
             f'<text x="{left}" y="{height - 8}" fill="#777">epoch 1</text>',
             f'<text x="{width - right}" y="{height - 8}" fill="#777" text-anchor="end">epoch {n}</text>']
    for k, (name, values) in enumerate(series.items()):
        v = np.asarray(values, dtype=float)
        if v.size == 0 or not np.isfinite(v).any():
            continue
        lo, hi = float(np.nanmin(v)), float(np.nanmax(v))
        span = hi - lo or 1.0
        xs = left + (np.arange(v.size) / max(v.size - 1, 1)) * (width - left - right)
        ys = top + (1 - (v - lo) / span) * (height - top - bottom)
        pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys) if np.isfinite(y))
        c = colors[k % len(colors)]
        parts.append(f'<polyline points="{pts}" fill="none" stroke="{c}" stroke-width="1.8"/>')
        parts.append(f'<text x="{left}" y="{height + 14 + 20 * k}" fill="{c}">{html.escape(name)}: '
                     f'{_fmt(float(v[0]))} → {_fmt(float(v[-1]))} (range {_fmt(lo)}–{_fmt(hi)})</text>')
    parts.append("</svg>")
    return "".join(parts)


def accuracy_section(acc_json: dict, colors: dict[int, str]) -> str:
    rows = []
    for c in acc_json["classes"]:
        sw = f'<span class="sw" style="background:{colors.get(c["code"], "#888")}"></span>'
        rows.append(f'<tr><td class="l">{sw}{html.escape(c["name"])}</td><td>{c["code"]}</td>'
                    f'<td>{c["reference_pixels"]}</td><td>{_fmt(c["producers"])}</td><td>{_fmt(c["users"])}</td></tr>')
    names = [c["name"] for c in acc_json["classes"]]
    cm = np.asarray(acc_json["confusion"])
    head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
    body = "".join(f'<tr><th class="l">{html.escape(names[i])}</th>' + "".join(f"<td>{v}</td>" for v in row) + "</tr>"
                   for i, row in enumerate(cm.tolist()))
    return f"""
<div class="kpi"><div>Overall accuracy<b>{_fmt(acc_json['oa'])}%</b></div><div>Average accuracy
<b>{_fmt(acc_json['aa'])}%</b></div><div>Kappa<b>{_fmt(acc_json['kappa'])}%</b></div>
<div>Test pixels<b>{acc_json['n']}</b></div></div>
<h2>Per class</h2>
<table><tr><th class="l">Class</th><th>Code</th><th>Reference pixels</th><th>Producer's accuracy %</th>
<th>User's accuracy %</th></tr>{''.join(rows)}</table>
<h2>Confusion matrix</h2>
{confusion_svg(cm, names)}
<table><tr><th class="l">reference ↓ / predicted →</th>{head}</tr>{body}</table>
"""


def split_section(summary: dict | None) -> str:
    if not summary:
        return '<p class="muted">No split information (the test pixels may include training pixels).</p>'
    strat = summary.get("strategy")
    note = ('<p class="warn">The paper\'s random pixel split: test pixels neighbour training pixels, so the '
            'accuracy is optimistic. Use the <b>polygons</b> or <b>blocks</b> split for an honest estimate.</p>'
            if strat == "pixels" else "")
    rows = "".join(
        f'<tr><td class="l">{html.escape(v["name"])}</td><td>{v["train"]}</td><td>{v["validation"]}</td><td>{v["test"]}</td>'
        f'<td>{v.get("train_polygons", v.get("train_blocks", "–"))}</td><td>{v.get("test_polygons", v.get("test_blocks", "–"))}</td></tr>'
        for v in summary.get("classes", {}).values())
    warns = "".join(f"<li>{html.escape(w)}</li>" for w in summary.get("warnings", []))
    if strat == "fixed":  # a separate test layer: name both sources and how validation was drawn
        def src(path_key: str, layer_key: str) -> str:
            name = os.path.basename(str(summary.get(path_key, "?")))
            layer = summary.get(layer_key)
            return html.escape(name + (f" (layer {layer})" if layer else ""))

        val = summary.get("validation_strategy") if summary.get("validation_share") else None
        note += (f"<p>Fixed sets: training pixels from <b>{src('groundtruth', 'layer')}</b>, test pixels from "
                 f"<b>{src('test_groundtruth', 'test_layer')}</b>"
                 + (f"; the validation share taken by <b>{html.escape(str(val))}</b>" if val else "") + ".</p>")
    totals = (f" In all: {summary['train']} training, {summary['validation']} validation, {summary['test']} test "
              "pixels." if "train" in summary else "")
    return f"""<h2>Split</h2><p>Strategy <b>{html.escape(str(strat))}</b>, seed {summary.get('seed')},
{summary.get('samples_per_class')} training pixels per class requested.{totals}</p>{note}
<table><tr><th class="l">Class</th><th>Training px</th><th>Validation px</th><th>Test px</th>
<th>Training regions/blocks</th><th>Test regions/blocks</th></tr>{rows}</table>
{f'<ul>{warns}</ul>' if warns else ''}"""


def write_html(dest: str | os.PathLike, title: str, body: str, subtitle: str = "") -> Path:
    doc = f"""<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1><p class="muted">{html.escape(subtitle)}</p>
{body}</body></html>"""
    with atomic_output(dest) as tmp:
        tmp.write_text(doc, encoding="utf-8")
    return Path(dest)


def write_json(dest: str | os.PathLike, obj: Any) -> Path:
    with atomic_output(dest) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=_json_default), encoding="utf-8")
    return Path(dest)


def write_csv(dest: str | os.PathLike, acc_json: dict) -> Path:
    lines = ["code,name,reference_pixels,producers_accuracy,users_accuracy"]
    for c in acc_json["classes"]:
        name = '"' + c["name"].replace('"', '""') + '"'
        lines.append(f'{c["code"]},{name},{c["reference_pixels"]},{_csv(c["producers"])},{_csv(c["users"])}')
    lines.append(f"OA,,{acc_json['n']},{_csv(acc_json['oa'])},")
    lines.append(f"AA,,,{_csv(acc_json['aa'])},")
    lines.append(f"Kappa,,,{_csv(acc_json['kappa'])},")
    with atomic_output(dest) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return Path(dest)


def _csv(v) -> str:
    return "" if v is None else f"{v:.4f}"


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)

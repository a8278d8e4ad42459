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


def _text_width(text: str, size: float = 11) -> float:
    """A generous estimate of a label's width in px (sans-serif, no font metrics at hand)."""
    return 0.62 * size * len(text)


def _error_fill(f: float, diagonal: bool) -> str:
    """Cell colour: green for the diagonal, red for errors, white for none.

    The intensity follows sqrt(f) with a floor, so a 1 % confusion is clearly tinted instead of
    near-white (a linear ramp left small off-diagonal errors invisible).
    """
    if f <= 0:
        return "#ffffff"
    a = 0.12 + 0.88 * float(np.sqrt(min(f, 1.0)))
    base = (26, 150, 65) if diagonal else (215, 48, 39)
    r, g, b = (int(round(255 - a * (255 - c))) for c in base)
    return f"rgb({r},{g},{b})"


def confusion_svg(cm: np.ndarray, names: list[str]) -> str:
    """The confusion matrix as an SVG heat map, rows normalised (producer's view), percentages in the cells."""
    k = len(names)
    cell = max(18, min(42, 480 // max(k, 1)))
    longest = max((_text_width(n) for n in names), default=0.0)
    left = int(longest + 14)
    # column labels rotated by -60 degrees: they rise by sin(60) and lean right by cos(60) of their length
    top = int(longest * 0.87 + 16)
    right = int(longest * 0.5 + 12)
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = cm / cm.sum(1, keepdims=True)
    width, height = left + k * cell + right, top + k * cell + 24
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             'font-family="sans-serif" font-size="11">']
    for i in range(k):
        y = top + i * cell
        parts.append(f'<text x="{left - 6}" y="{y + cell * .65}" text-anchor="end">{html.escape(names[i])}</text>')
        x = left + i * cell + cell * .6
        parts.append(f'<text transform="translate({x},{top - 6}) rotate(-60)">{html.escape(names[i])}</text>')
        for j in range(k):
            f = float(frac[i, j]) if np.isfinite(frac[i, j]) else 0.0
            parts.append(f'<rect x="{left + j * cell}" y="{y}" width="{cell}" height="{cell}" '
                         f'fill="{_error_fill(f, i == j)}" stroke="#ddd"><title>{html.escape(names[i])} → '
                         f'{html.escape(names[j])}: {int(cm[i, j])} ({f * 100:.1f}%)</title></rect>')
            if cell >= 26 and cm[i, j] > 0:
                ink = "#fff" if f > 0.5 else "#222"
                label = f"{f * 100:.0f}" if f >= 0.01 else "<1"
                parts.append(f'<text x="{left + j * cell + cell / 2}" y="{y + cell * .62}" text-anchor="middle" '
                             f'font-size="10" fill="{ink}">{html.escape(label)}</text>')
    parts.append(f'<text x="{left}" y="{top + k * cell + 16}" fill="#777">reference (rows) × predicted (columns), '
                 '% of each row</text>')
    parts.append("</svg>")
    return "".join(parts)


COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values covering [lo, hi] (steps of 1, 2, 2.5 or 5 times a power of ten)."""
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return [0.0, 1.0]
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / max(n - 1, 1)
    mag = 10 ** np.floor(np.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw * (1 - 1e-9))
    first = np.floor(lo / step + 1e-9) * step
    count = int(np.ceil((hi - first) / step - 1e-9)) + 1
    return [float(round(first + i * step, 10)) for i in range(count)]


def _tick_label(v: float, step: float) -> str:
    """``v`` with as many decimals as the step needs (0.25 -> 2, 0.5 -> 1, 20 -> 0)."""
    digits = next((d for d in range(7) if abs(round(step, d) - step) < 1e-9 * max(1.0, abs(step))), 6)
    return f"{v:.{digits}f}"


def chart_svg(series: dict[str, list[float]], y_label: str, marker: int | None = None, y_min: float | None = 0.0,
              y_max: float | None = None, width: int = 620, height: int = 230) -> str:
    """Per-epoch curves on one labelled y-axis (shared by all the series), epochs on the x-axis.

    ``marker``: the kept epoch (0-based), drawn as a dashed vertical line. ``y_min`` / ``y_max``:
    fixed ends of the axis (None: from the data, rounded out to ticks).
    """
    left, right, top, bottom = 58, 14, 22, 36
    pw, ph = width - left - right, height - top - bottom
    vals = [np.asarray(v, dtype=float) for v in series.values() if len(v)]
    finite = np.concatenate([v[np.isfinite(v)] for v in vals]) if vals else np.array([])
    n = max((len(v) for v in series.values()), default=0)
    lo = y_min if y_min is not None else (float(finite.min()) if finite.size else 0.0)
    hi = y_max if y_max is not None else (float(finite.max()) if finite.size else 1.0)
    if finite.size:  # a fixed end never hides data
        lo, hi = min(lo, float(finite.min())), max(hi, float(finite.max()))
    ticks = nice_ticks(lo, hi)
    lo, hi = ticks[0], ticks[-1]
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0

    def sx(i: float) -> float:
        return left + (i / max(n - 1, 1)) * pw

    def sy(v: float) -> float:
        return top + (1 - (v - lo) / ((hi - lo) or 1.0)) * ph

    legend, lx, ly = [], float(left), height + 12.0  # entries placed left to right, wrapping at the width
    for k, (name, values) in enumerate(series.items()):
        v = np.asarray(values, dtype=float)
        label = name + (f" (last {float(v[-1]):.3g})" if v.size and np.isfinite(v[-1]) else "")
        w = 24 + _text_width(label) + 14
        if lx + w > width and lx > left:
            lx, ly = float(left), ly + 18
        legend.append((lx, ly, COLORS[k % len(COLORS)], label))
        lx += w
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{int(ly) + 8}" '
             'font-family="sans-serif" font-size="11">']
    for t in ticks:  # horizontal grid and the y-axis labels
        y = sy(t)
        parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#555">'
                     f'{_tick_label(t, step)}</text>')
    parts.append(f'<text transform="translate(14,{top + ph / 2:.1f}) rotate(-90)" text-anchor="middle" fill="#333">'
                 f'{html.escape(y_label)}</text>')
    parts.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>')
    every = next(m for m in (1, 2, 5, 10, 20, 25, 50, 100, 200, 500, 1000, 10 ** 9) if n / m <= 10)
    shown = sorted({0, n - 1} | {e - 1 for e in range(every, n, every)}) if n else []
    for e in shown:  # x ticks at round epochs, numbered from 1
        x = sx(e)
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top + ph}" y2="{top + ph + 4}" stroke="#999"/>')
        parts.append(f'<text x="{x:.1f}" y="{top + ph + 16}" text-anchor="middle" fill="#555">{e + 1}</text>')
    parts.append(f'<text x="{left + pw / 2}" y="{height - 4}" text-anchor="middle" fill="#333">epoch</text>')
    if marker is not None and 0 <= marker < n:
        x = sx(marker)
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{top + ph}" stroke="#333" '
                     'stroke-dasharray="4,3"/>')
        anchor = "end" if marker > n / 2 else "start"
        dx = 4 if anchor == "end" else -4  # above the plot, leaning into it
        parts.append(f'<text x="{x + dx:.1f}" y="{top - 6}" text-anchor="{anchor}" fill="#333">kept epoch '
                     f'{marker + 1}</text>')
    for k, (name, values) in enumerate(series.items()):
        v = np.asarray(values, dtype=float)
        c = COLORS[k % len(COLORS)]
        if v.size:
            pts = " ".join(f"{sx(i):.1f},{sy(y):.1f}" for i, y in enumerate(v) if np.isfinite(y))
            parts.append(f'<polyline points="{pts}" fill="none" stroke="{c}" stroke-width="1.8"/>')
            dots = {0} if v.size == 1 else set()
            if marker is not None and 0 <= marker < v.size:
                dots.add(marker)  # the kept epoch's value on each curve
            parts.extend(f'<circle cx="{sx(i):.1f}" cy="{sy(v[i]):.1f}" r="3" fill="{c}"/>'
                         for i in sorted(dots) if np.isfinite(v[i]))
    for lx, ly, c, label in legend:
        parts.append(f'<line x1="{lx:.1f}" x2="{lx + 16:.1f}" y1="{ly - 4}" y2="{ly - 4}" stroke="{c}" '
                     f'stroke-width="2"/><text x="{lx + 20:.1f}" y="{ly}" fill="#333">{html.escape(label)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def training_section(history: dict) -> str:
    """The training curves of a BDGF run: loss and its parts, the temperatures, validation OA; warnings first.

    Each chart has its own labelled y-axis shared by its curves; the kept epoch is marked.
    """
    best = history.get("best_epoch")
    loss = history.get("loss", [])
    terms = history.get("terms", {})
    val = history.get("val_oa", [])
    out = ["<h2>Training curves</h2>"]
    warns = history.get("warnings", [])
    if warns:
        out.append('<div class="warn"><b>Check the validation set:</b><ul>'
                   + "".join(f"<li>{html.escape(w)}</li>" for w in warns) + "</ul></div>")
    kept = ("best validation OA; of equal OAs, the lowest validation loss" if val
            else "last epoch, no validation pixels")
    out.append(f"<p>Kept epoch <b>{(best or 0) + 1}</b> of {len(loss)} ({kept}).</p>")
    curves = {"loss (eq. 29)": loss}
    curves.update({n: terms[k] for k, n in (("ce", "CE of the fused head"), ("ce_cnn", "CE cnn"),
                                           ("ce_trans", "CE transformer"), ("ce_mamba", "CE mamba"))
                   if k in terms})
    out.append("<h3>Training loss</h3>" + chart_svg(curves, "mean loss per epoch", best))
    kl = {f"KL {k[3:]}": terms[k] for k in ("kl_ct", "kl_cm", "kl_tm") if k in terms}
    if kl:
        out.append("<h3>Mutual learning (eq. 28: T² · KL per pair)</h3>" + chart_svg(kl, "T² · KL", best))
    temps = {f"T {k[5:]}": terms[k] for k in ("T_kl_ct", "T_kl_cm", "T_kl_tm") if k in terms}
    if temps:
        out.append("<h3>Temperatures (eq. 27, mean per epoch)</h3>" + chart_svg(temps, "T", best))
    if val:
        pct = [100 * v for v in val]
        floor = float(np.floor(min(pct) / 10) * 10)
        out.append("<h3>Validation</h3>" + chart_svg({"validation OA": pct}, "OA %", best, y_min=min(floor, 90.0),
                                                     y_max=100.0))
        if history.get("val_loss"):
            out.append(chart_svg({"validation loss (CE of the fused head)": history["val_loss"]}, "mean CE", best))
    seconds, val_s = history.get("seconds", 0.0), history.get("val_seconds", 0.0)
    share = f" ({100 * val_s / seconds:.0f} % of it)" if seconds > 0 and val_s else ""
    scored = ""
    if history.get("val_pixels"):
        scored = (f"; each epoch scored on {history['val_pixels']} of the {history.get('val_pixels_given', '?')} "
                  "validation pixels (a fixed stratified subset)")
    out.append(f"<p class='muted'>{seconds:.1f} s of training; validation {val_s:.1f} s{share}{scored}.</p>")
    return "".join(out)


def accuracy_section(acc_json: dict, colors: dict[int, str]) -> str:
    sample = acc_json.get("sample")  # figures estimated from a stratified sample (testsample.py)

    def pm(v, half) -> str:  # a class's figure with its 95 % half-width, when estimated
        return _fmt(v) + (f" <small>± {half:.1f}</small>" if sample and half is not None and v is not None else "")

    rows = []
    for c in acc_json["classes"]:
        sw = f'<span class="sw" style="background:{colors.get(c["code"], "#888")}"></span>'
        ref = f'{c["sampled"]} of {c["test_pixels"]}' if sample else c["reference_pixels"]
        rows.append(f'<tr><td class="l">{sw}{html.escape(c["name"])}</td><td>{c["code"]}</td>'
                    f'<td>{ref}</td><td>{pm(c["producers"], c.get("producers_ci95"))}</td>'
                    f'<td>{pm(c["users"], c.get("users_ci95"))}</td></tr>')
    oa, aa, n = f"{_fmt(acc_json['oa'])}%", f"{_fmt(acc_json['aa'])}%", acc_json["n"]
    note, matrix_note = "", ""
    if sample:  # the 95 % interval, clipped to 0-100
        from .testsample import interval

        span = lambda v, h: f"{v:.2f}% <small>({'–'.join(f'{x:.2f}' for x in interval(v, h))})</small>"  # noqa: E731
        oa, aa = span(acc_json["oa"], sample["oa_ci95"]), span(acc_json["aa"], sample["aa_ci95"])
        n = f"{sample['n']} of {sample['population']}"
        note = (f'<p class="muted">Estimated from a stratified sample of {sample["n"]} of the '
                f'{sample["population"]} test pixels (an equal part per class; each class weighted by its test '
                "pixels). In brackets and after ± the 95 % interval of the whole held-out set's figure: it covers "
                "the sampling of those pixels only. The test cap sets the sample's size (0: every test pixel); "
                "'Assess accuracy' on the classified map gives every pixel.</p>")
        matrix_note = ('<p class="muted">Estimated for all the test pixels from the sample (each class\'s sampled '
                       "row scaled to its test pixels, rounded); the report's figures are read from it.</p>")
    names = [c["name"] for c in acc_json["classes"]]
    cm = np.asarray(acc_json["confusion"])
    head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
    body = "".join(f'<tr><th class="l">{html.escape(names[i])}</th>' + "".join(f"<td>{v}</td>" for v in row) + "</tr>"
                   for i, row in enumerate(cm.tolist()))
    return f"""
<div class="kpi"><div>Overall accuracy<b>{oa}</b></div><div>Average accuracy
<b>{aa}</b></div><div>Kappa<b>{_fmt(acc_json['kappa'])}%</b></div>
<div>Test pixels<b>{n}</b></div></div>{note}
<h2>Per class</h2>
<table><tr><th class="l">Class</th><th>Code</th><th>{'Sampled of test' if sample else 'Reference'} pixels</th><th>Producer's accuracy %</th>
<th>User's accuracy %</th></tr>{''.join(rows)}</table>
<h2>Confusion matrix</h2>{matrix_note}
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
    if summary.get("fingerprint"):  # two runs that show the same fingerprint trained and tested on the same pixels
        totals += f" Split fingerprint <code>{html.escape(str(summary['fingerprint']))}</code>."
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

"""Render ``ptbot eval`` results: a text table, PNG plots and a one-page HTML report.

Everything here works from the plain ``--json`` document (``{"results": {dataset: {method:
metrics}}}``, as ``lab.evaluate.EvalReport.to_json`` writes it), so a saved JSON can be
re-rendered without torch or the model. Plots use matplotlib's Agg backend (no display).
"""

from __future__ import annotations

import base64
import html
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

TABLE_METRICS = ("top1", "top3", "top5", "auroc", "brier", "bss", "ece", "n_snippets")
_HIGHER_IS_BETTER = {"top1": True, "top3": True, "top5": True, "auroc": True, "brier": False, "bss": True,
                     "ece": False}


def _results(doc: dict[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    if not isinstance(doc, dict) or not isinstance(doc.get("results"), dict):
        raise ValueError('not an eval result: expected {"results": {dataset: {method: metrics}}} '
                         "(the file `ptbot eval --json` writes)")
    return doc["results"]


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v)) else None


def _cell(m: dict[str, Any], key: str) -> str:
    v = _num(m.get(key))
    if v is None:
        return "-"
    if key == "n_snippets":
        return str(int(v))
    std = ((m.get("seeds") or {}).get(key) or {}).get("std")
    return f"{v:.3f}" + (f"±{std:.3f}" if isinstance(std, (int, float)) else "")


def _best(methods: dict[str, dict[str, Any]], key: str) -> set[str]:
    vals = {name: _num(m.get(key)) for name, m in methods.items()}
    vals = {k: v for k, v in vals.items() if v is not None}
    if not vals or key not in _HIGHER_IS_BETTER:
        return set()
    target = (max if _HIGHER_IS_BETTER[key] else min)(vals.values())
    return {k for k, v in vals.items() if v == target}


def render_table(doc: dict[str, Any], metrics: Sequence[str] = TABLE_METRICS) -> str:
    """One block per dataset, one row per method; ``*`` marks the best value of each column.

    Values are means over seeds where several seeds ran (``±`` the standard deviation); the
    Top-1 95% bootstrap interval follows in brackets when present.
    """
    lines: list[str] = []
    for ds, methods in _results(doc).items():
        header = ["method", *metrics, "top1 95% CI"]
        rows = []
        best = {k: _best(methods, k) for k in metrics}
        for name, m in methods.items():
            cells = [name] + [_cell(m, k) + ("*" if name in best[k] else "") for k in metrics]
            ci = (m.get("ci") or {}).get("top1")
            cells.append(f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci and None not in ci else "-")
            rows.append(cells)
        widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
        fmt = lambda r: "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)  # noqa: E731
                                  for i, (c, w) in enumerate(zip(r, widths)))
        lines += [f"== {ds}", fmt(header), fmt(["-" * w for w in widths]), *map(fmt, rows), ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------- plots


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def plot_topk(doc: dict[str, Any], out_dir: Path) -> list[Path]:
    """``topk-<dataset>.png``: Top-K hit rate against K, one line per method."""
    plt = _pyplot()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for ds, methods in _results(doc).items():
        fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
        for name, m in methods.items():
            curve = [_num(v) for v in m.get("topk_curve") or []]
            if curve and any(v is not None for v in curve):
                ax.plot(range(1, len(curve) + 1), [math.nan if v is None else v for v in curve],
                        marker="o", ms=3, label=name, lw=2.2 if name == "pttrust" else 1.2,
                        ls="--" if name == "random" else "-")
        ax.set(xlabel="K (top-ranked lines)", ylabel="Top-K hit rate (token-weighted)", ylim=(0, 1),
               title=f"Top-K hit rate: {ds}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = out_dir / f"topk-{_safe(ds)}.png"
        fig.savefig(path)
        plt.close(fig)
        paths.append(path)
    return paths


def plot_reliability(doc: dict[str, Any], out_dir: Path) -> list[Path]:
    """``reliability-<method>.png``: observed buggy share against mean probability, per dataset."""
    plt = _pyplot()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    by_method: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for ds, methods in _results(doc).items():
        for name, m in methods.items():
            if m.get("reliability"):
                by_method.setdefault(name, []).append((ds, m))
    paths = []
    for name, items in by_method.items():
        fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
        ax.plot([0, 1], [0, 1], color="grey", ls=":", lw=1, label="perfect calibration")
        for ds, m in items:
            rel = m["reliability"]
            pts = [(p, f, c) for p, f, c in zip(rel["mean_p"], rel["frac_pos"], rel["count"]) if c]
            if not pts:
                continue
            ece = _num(m.get("ece"))
            ax.plot([p for p, _, _ in pts], [f for _, f, _ in pts], marker="o", ms=3,
                    label=f"{ds}" + (f" (ECE {ece:.3f})" if ece is not None else ""))
        ax.set(xlabel="mean predicted P(buggy)", ylabel="observed share of buggy lines",
               xlim=(0, 1), ylim=(0, 1), title=f"Reliability: {name}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = out_dir / f"reliability-{_safe(name)}.png"
        fig.savefig(path)
        plt.close(fig)
        paths.append(path)
    return paths


# -------------------------------------------------------------------------------------- HTML


def _html_table(ds: str, methods: dict[str, dict[str, Any]]) -> str:
    best = {k: _best(methods, k) for k in TABLE_METRICS}
    head = "".join(f"<th>{html.escape(k)}</th>" for k in ("method", *TABLE_METRICS, "top1 95% CI"))
    rows = []
    for name, m in methods.items():
        cells = [f"<td>{html.escape(name)}</td>"]
        for k in TABLE_METRICS:
            text = html.escape(_cell(m, k))
            cells.append(f"<td><b>{text}</b></td>" if name in best[k] else f"<td>{text}</td>")
        ci = (m.get("ci") or {}).get("top1")
        cells.append(f"<td>[{ci[0]:.3f}, {ci[1]:.3f}]</td>" if ci and None not in ci else "<td>-</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<h2>{html.escape(ds)}</h2><table><tr>{head}</tr>{''.join(rows)}</table>"


def write_html(doc: dict[str, Any], out_dir: Path, images: Sequence[Path], title: str = "ptbot eval") -> Path:
    """``report.html`` in ``out_dir``: the tables and the given PNGs embedded as base64 (one file)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tables = "".join(_html_table(ds, methods) for ds, methods in _results(doc).items())
    figs = "".join(
        f'<figure><img alt="{html.escape(p.stem)}" src="data:image/png;base64,'
        f'{base64.b64encode(Path(p).read_bytes()).decode()}"><figcaption>{html.escape(p.stem)}</figcaption></figure>'
        for p in images)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin-bottom: 1.5em; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; }}
figure {{ display: inline-block; margin: 0.5em; }} img {{ max-width: 520px; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>Top-K: share of the buggy lines' tokens inside the K top-ranked lines, averaged over snippets.
BSS is against the training base rate; ECE uses 15 equal-width bins. Bold = best in column;
± = standard deviation over seeds.</p>
{tables}
{figs}
</body></html>
"""
    path = out_dir / "report.html"
    path.write_text(page, encoding="utf-8")
    return path


def write_plots(doc: dict[str, Any], out_dir: Path, title: str = "ptbot eval") -> list[Path]:
    """All PNGs (Top-K per dataset, reliability per method) and ``report.html``; returns the paths."""
    images = plot_topk(doc, out_dir) + plot_reliability(doc, out_dir)
    return [*images, write_html(doc, out_dir, images, title)]


# ---------------------------------------------------------------------------- ptbot features


def render_latents(associations: Sequence[dict[str, Any]]) -> str:
    """Text listing of ``LatentAssociation.to_dict()`` rows with their example lines."""
    out = []
    for a in associations:
        label = f"  [{a['label']}]" if a.get("label") else ""
        out.append(f"latent {a['latent']:>5}  diff {a['diff']:+.4f}  mean buggy {a['mean_buggy']:.4f}  "
                   f"correct {a['mean_correct']:.4f}  fires on {a['fire_buggy']:.0%} buggy / "
                   f"{a['fire_correct']:.0%} correct lines{label}")
        for e in a.get("examples", []):
            mark = "BUG" if e["buggy"] else "   "
            out.append(f"    {mark} {e['activation']:7.3f}  {e['record_id']}:{e['line']}  {e['text'].strip()[:100]}")
    return "\n".join(out) + ("\n" if out else "")

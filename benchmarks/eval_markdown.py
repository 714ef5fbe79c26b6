"""Turn `ptbot eval --json` files into the markdown tables of BENCHMARKS.md.

    python benchmarks/eval_markdown.py runs/eval.json [more.json ...] [--label NAME=FILE ...]

One table per dataset (rows: methods, Top-1 with its 95% bootstrap interval), or, with several
``--label`` files, one row per label for the ``pttrust`` method (ablations).
"""

from __future__ import annotations

import argparse
import json


def _fmt(x) -> str:
    return "—" if x is None else f"{x:.3f}"


def per_dataset(doc: dict) -> str:
    out = []
    for stem, methods in doc["results"].items():
        out.append(f"**{stem}** ({int(next(iter(methods.values()))['n_snippets'])} snippets)\n")
        # With --seeds N the trained methods' numbers are means over seeds and the bootstrap interval
        # in the JSON is seed 0's: show both, saying which is which.
        seeds = max(((m.get("seeds") or {}).get("top1") or {}).get("n", 1) for m in methods.values())
        head = (f"Top-1 mean ± std over {seeds} seeds [seed 0's 95% CI]" if seeds > 1 else "Top-1 [95% CI]")
        out.append(f"| method | {head} | Top-3 | Top-5 | AUROC | Brier | BSS | ECE |")
        out.append("|---|---|---|---|---|---|---|---|")
        for name, m in methods.items():
            ci = (m.get("ci") or {}).get("top1")
            spread = (m.get("seeds") or {}).get("top1")
            top1 = (_fmt(m["top1"]) + (f" ± {spread['std']:.3f}" if seeds > 1 and spread else "")
                    + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else ""))
            out.append(f"| {name} | {top1} | {_fmt(m['top3'])} | {_fmt(m['top5'])} | {_fmt(m['auroc'])} "
                       f"| {_fmt(m['brier'])} | {_fmt(m['bss'])} | {_fmt(m['ece'])} |")
        out.append("")
    return "\n".join(out)


def ablation(labelled: list[tuple[str, dict]], method: str = "pttrust") -> str:
    stems = list(labelled[0][1]["results"])
    out = ["| variant | " + " | ".join(stems) + " | mean |", "|---|" + "---|" * (len(stems) + 1)]
    for label, doc in labelled:
        vals = [doc["results"][s].get(method, {}).get("top1") for s in stems]
        ok = [v for v in vals if v is not None]
        mean = sum(ok) / len(ok) if ok else None
        out.append(f"| {label} | " + " | ".join(_fmt(v) for v in vals) + f" | {_fmt(mean)} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="*")
    ap.add_argument("--label", action="append", default=[], metavar="NAME=FILE")
    ap.add_argument("--method", default="pttrust")
    args = ap.parse_args()
    for f in args.files:
        print(per_dataset(json.load(open(f))))
    if args.label:
        pairs = [(lab, json.load(open(path))) for lab, path in (x.split("=", 1) for x in args.label)]
        print(ablation(pairs, args.method))


if __name__ == "__main__":
    main()

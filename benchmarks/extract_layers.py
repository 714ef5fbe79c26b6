"""Fill the line-state cache for several layers of one supervisor in a single forward pass.

A layer sweep reads the same texts at every layer; running the model once to the deepest layer
and keeping each probed layer's residual costs one pass instead of one per layer. Each layer's
states are normalised by the model's final norm, exactly as a supervisor truncated at that layer
returns them, and written where ``StateCache`` (and so ``ptbot eval --layer N``, ``bind``) looks.

    python benchmarks/extract_layers.py corpus/train.jsonl corpus/validation.jsonl --layers 4,6,9,12

The first text of the run is checked against a supervisor truncated at the shallowest layer, so a
mismatch with the product's reading fails loudly instead of filling the cache with other states.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import torch
from tqdm import tqdm

from analyzer.artifact import default_model_dir
from analyzer.features import FeatureConfig, StateCache, supervisor_input
from lab.records import load_records
from analyzer.supervisor import Supervisor, SupervisorConfig, default_cache_dir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", nargs="+", type=Path)
    ap.add_argument("--layers", default="4,6,9,12")
    ap.add_argument("--supervisor", default="qwen2.5-coder-0.5b")
    ap.add_argument("--chunk", type=int, default=32)
    args = ap.parse_args()
    layers = sorted({int(x) for x in args.layers.split(",")})
    features = FeatureConfig.from_dict(json.loads((default_model_dir() / "manifest.json").read_text())["features"])
    root = Path(os.environ.get("PTBOT_CACHE_DIR") or default_cache_dir())

    sup = Supervisor.load(SupervisorConfig(model=args.supervisor, layer=max(layers)))
    caches = {k: StateCache(root, SimpleNamespace(info=sup.info, layer=k)) for k in layers}
    blocks = sup.model.layers
    captured: dict[int, torch.Tensor] = {}
    for k in layers:
        blocks[k - 1].register_forward_hook(
            lambda _m, _i, out, k=k: captured.__setitem__(k, out[0] if isinstance(out, tuple) else out))
    d = sup.info.hidden_size
    plain_forward = sup._forward

    def forward_all(rows: list[list[int]]) -> torch.Tensor:
        plain_forward(rows)
        # (B, T, d * len(layers)): each layer's residual through the final norm, side by side.
        return torch.cat([sup.model.norm(captured[k]) for k in layers], dim=-1)

    sup._forward = forward_all
    sup.info = replace(sup.info, hidden_size=d * len(layers))

    records = load_records(args.data)
    texts = {}
    for r in records:
        key, enc, spans = supervisor_input(sup, r.code, features.prefix_for(r.language))
        texts[key] = (enc.ids, spans)
    todo = [key for key in texts if any(caches[k].get(key) is None for k in layers)]
    print(f"{len(records)} records, {len(texts)} distinct texts, {len(todo)} to read at layers {layers}")

    checked = False
    for c in tqdm(range(0, len(todo), args.chunk), desc="reading code", unit="chunk"):
        part = todo[c:c + args.chunk]
        states = sup.states([texts[key][0] for key in part])
        for key, h in zip(part, states):
            idx = torch.tensor([s.end_token for s in texts[key][1]], dtype=torch.long)
            for j, k in enumerate(layers):
                caches[k].put(key, h[idx, j * d:(j + 1) * d])
        if not checked:
            ref = Supervisor.load(SupervisorConfig(model=args.supervisor, layer=layers[0]))
            key = part[0]
            want = ref.states([texts[key][0]])[0][torch.tensor([s.end_token for s in texts[key][1]])]
            got = caches[layers[0]].get(key)
            err = float((want - got).abs().max())
            assert err < 1e-3, f"layer {layers[0]} states differ from the truncated supervisor's by {err}"
            print(f"checked layer {layers[0]} against a truncated supervisor: max |diff| {err:.2e}")
            del ref
            checked = True


if __name__ == "__main__":
    main()

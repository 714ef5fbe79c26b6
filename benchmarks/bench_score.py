"""Scoring speed of the analyzer engine on a fixed corpus, all figures from one run.

    python benchmarks/bench_score.py [--model MODEL_DIR] [--files 32] [--repeats 3] [--json]

Measures, on the supervisor the model directory was built for (default: the packaged artifact),
with a fixed corpus of ``--files`` programs taken round-robin from the shared
``humanevalpack-*.jsonl`` files (six languages):

- ``cold_load_s``: ``RiskScorer.load`` with an EMPTY cache directory (GGUF dequantization and
  tokenizer conversion included; imports are done before the clock starts);
- ``warm_load_s``: the same load again, reading the cache written by the first;
- ``truncated_over_full``: the probed-layer forward (only the first ``layer`` blocks, no head) over
  the full model's forward (every block and the LM head, ``output_hidden_states``) on the same
  token batches;
- ``pipeline_over_forward``: ``RiskScorer.score_many`` on the files (tokenization, line mapping,
  forward, SAE, ranker, calibration) over the bare truncated forward on the same token ids;
- ``lines_per_s``: scored lines per second of ``score_many``;
- ``supervisors``: every embedded supervisor that is installed, side by side in the same rounds:
  ``lines_per_s`` of reading the corpus (tokenization, truncated forward at the layer a model of
  that supervisor reads, line mapping: everything of scoring but the SAE and ranker, which cost
  well under 1% of it) and ``over_default``, that rate over the default supervisor's.

The three timed steps run interleaved: one warm-up round, then ``--repeats`` rounds of (truncated,
full, pipeline); times are medians over rounds and ratios are medians of the per-round ratios, so
load drift on a shared machine does not bias them. The CPU is whatever torch is given
(``torch.get_num_threads()`` is reported). Takes ~5 min on a busy 2-core CPU (the full forward
dominates).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from analyzer.artifact import default_model_dir, read_manifest  # noqa: E402
from analyzer.embedded import REGISTRY  # noqa: E402
from analyzer.features import FeatureConfig, extract, supervisor_input  # noqa: E402
from analyzer.score import RiskScorer  # noqa: E402
from analyzer.supervisor import Supervisor, SupervisorConfig  # noqa: E402
from analyzer.types import ScoreRequest  # noqa: E402
from lab.records import load_records  # noqa: E402

log = logging.getLogger("bench_score")
LANGUAGES = ("python", "javascript", "java", "go", "cpp", "rust")


def corpus(data_dir: Path, n_files: int) -> list[ScoreRequest]:
    """``n_files`` programs, round-robin over the six HumanEvalPack languages (file order)."""
    per_lang = {lang: load_records([data_dir / f"humanevalpack-{lang}.jsonl"]) for lang in LANGUAGES}
    out: list[ScoreRequest] = []
    i = 0
    while len(out) < n_files:
        for lang in LANGUAGES:
            if len(out) < n_files and i < len(per_lang[lang]):
                rec = per_lang[lang][i]
                out.append(ScoreRequest(path=f"{lang}/{i}", text=rec.code, language=lang))
        i += 1
    return out


def interleaved(steps: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Wall times of each step, ``repeats`` rounds after one warm-up round.

    The steps run one after another inside every round, so a change in load on a shared machine
    hits all of them alike; ratios are then taken per round (see ``ratio``).
    """
    for fn in steps.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, fn in steps.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def ratio(num: list[float], den: list[float]) -> float:
    """Median over rounds of num/den (robust to load drift between rounds)."""
    return statistics.median(a / b for a, b in zip(num, den, strict=True))


def run(model_dir: Path, data_dir: Path, n_files: int, repeats: int, device: str,
        cache_dir: Path | None = None) -> dict:
    manifest = read_manifest(model_dir)
    # Imports that a first load would otherwise pay inside the clock (transformers loads each
    # class on first access).
    import transformers

    for name in ("AutoConfig", "AutoModel", "AutoModelForCausalLM", "AutoTokenizer"):
        getattr(transformers, name)

    with tempfile.TemporaryDirectory(prefix="ptbot-bench-cache-") as tmp:
        cfg = SupervisorConfig(device=device, cache_dir=Path(tmp))
        assert not any(Path(tmp).iterdir()), "cold load needs an empty cache directory"
        t0 = time.perf_counter()
        RiskScorer.load(model_dir, supervisor=cfg)
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        scorer = RiskScorer.load(model_dir, supervisor=cfg)
        warm = time.perf_counter() - t0

        sup = scorer.sup
        full = Supervisor.load(replace(sup.cfg, full=True))
        requests = corpus(data_dir, n_files)
        # The token ids exactly as the pipeline builds them (prompt prefix + file text).
        ids = [supervisor_input(sup, r.text, scorer.features.prefix_for(r.language))[1].ids for r in requests]
        n_tokens = sum(len(x) for x in ids)

        n_lines = sum(len(r) for r in scorer.score_many(requests))
        readers = _readers(requests, device, cache_dir or Path(tmp))
        steps = {"truncated": lambda: sup.states(ids), "full": lambda: full.states(ids),
                 "pipeline": lambda: scorer.score_many(requests), **{k: v[0] for k, v in readers.items()}}
        times = interleaved(steps, repeats)
        full = None  # frees the full model (the steps still hold it) before the cache goes
    t_trunc, t_full, t_pipe = (statistics.median(times[k]) for k in ("truncated", "full", "pipeline"))
    reference = times.get(manifest["supervisor"]["model"])
    supervisors = {
        name: {"layer": layer, "lines_per_s": round(n / statistics.median(times[name]), 1),
               **({"over_default": round(ratio(reference, times[name]), 3)} if reference else {})}
        for name, (_, n, layer) in readers.items()}

    return {
        "lines_per_s": round(n_lines / t_pipe, 1),
        "truncated_over_full": round(ratio(times["truncated"], times["full"]), 3),
        "pipeline_over_forward": round(ratio(times["pipeline"], times["truncated"]), 3),
        "cold_load_s": round(cold, 2),
        "warm_load_s": round(warm, 2),
        "warm_over_cold": round(warm / cold, 3),
        "truncated_forward_s": round(t_trunc, 4),
        "full_forward_s": round(t_full, 4),
        "pipeline_s": round(t_pipe, 4),
        "files": len(requests),
        "lines": n_lines,
        "tokens": n_tokens,
        "layer": sup.layer,
        "num_layers": sup.info.num_layers,
        "supervisor": sup.info.source,
        "model": manifest.get("name", model_dir.name),
        "device": str(sup.device),
        "torch_threads": torch.get_num_threads(),
        "repeats": repeats,
        "supervisors": supervisors,
    }


def _readers(requests: list[ScoreRequest], device: str, cache_dir: Path) -> dict[str, tuple[Callable[[], object], int, int]]:
    """name -> (read the corpus once, lines read, layer) for each installed embedded supervisor."""
    out = {}
    features = FeatureConfig()
    texts, langs = [r.text for r in requests], [r.language for r in requests]
    for name, emb in REGISTRY.items():
        if not emb.installed():
            log.warning("%s is not installed (%s): left out of the comparison", name, emb.install)
            continue
        # No layer given: ceil(L/4), the layer the models built for each supervisor read.
        sup = Supervisor.load(SupervisorConfig(model=name, device=device, cache_dir=cache_dir))
        n = sum(len(sn.lines) for sn in extract(sup, texts, langs, features))
        out[name] = ((lambda sup=sup: extract(sup, texts, langs, features)), n, sup.layer)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, help="model directory (default: the packaged artifact)")
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("PTBOT_SHARED_DATA", ROOT.parent / "shared" / "data")),
                    help="directory holding humanevalpack-*.jsonl (default: ../shared/data)")
    ap.add_argument("--files", type=int, default=32, help="programs in the corpus")
    ap.add_argument("--repeats", type=int, default=3, help="timed rounds (medians reported)")
    ap.add_argument("--device", default="cpu", help="torch device (default cpu)")
    ap.add_argument("--cache", type=Path, help="cache of dequantized supervisors for the side-by-side "
                    "comparison (default: the cold-load directory; pass PTBOT_CACHE_DIR to skip re-dequantizing)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    model_dir = args.model or default_model_dir()
    if not (model_dir / "manifest.json").exists():
        ap.error(f"{model_dir} has no manifest.json: pass --model MODEL_DIR (built with `ptbot pretrain` "
                 "and `ptbot bind`)")
    if not (args.data / "humanevalpack-python.jsonl").exists():
        ap.error(f"no humanevalpack-*.jsonl under {args.data}; pass --data")
    if args.files < 1 or args.repeats < 1:
        ap.error("--files and --repeats must be >= 1")
    result = run(model_dir, args.data, args.files, args.repeats, args.device, args.cache)
    if args.json:
        print(json.dumps(result))
    else:
        width = max(len(k) for k in result)
        for k, v in result.items():
            print(f"{k:<{width}}  {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

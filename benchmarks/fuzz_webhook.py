"""Malformed-but-signed webhook deliveries through the real Flask app, as many as the nightly run.

Runs the property of ``tests/test_webhook_payloads.py`` (mutated real payloads of every event
ptbot handles, signed, sent through ``bot.webhook.create_app``) under a Hypothesis profile,
``nightly`` (10,000 cases) unless ``--profile`` says otherwise, and reports how many cases ran,
how they were answered and the wall time. Exits 1 on the first case that breaks the property
(a 5xx, an exception escaping the app, a job enqueued for a payload that must be refused),
printing Hypothesis's falsifying example.

    OMP_NUM_THREADS=1 /work/venv/bin/python benchmarks/fuzz_webhook.py
    /work/venv/bin/python benchmarks/fuzz_webhook.py --profile ci --json

The same property runs in the test suite with the ``ci`` profile (500 cases); set
``PTBOT_HYPOTHESIS_PROFILE=nightly`` to give pytest the 10,000-case one.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="nightly", choices=["ci", "nightly"],
                        help="Hypothesis profile of tests/test_webhook_payloads.py (default: nightly, 10,000 cases)")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    args = parser.parse_args()

    os.environ["PTBOT_HYPOTHESIS_PROFILE"] = args.profile  # read when the test module is imported
    sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
    import logging

    logging.disable(logging.WARNING)  # one refusal line per malformed case is the app's job, not ours
    import test_webhook_payloads as prop

    start = time.perf_counter()
    failure = None
    try:
        prop.test_mutated_payloads_get_4xx_never_5xx()
    except Exception as e:  # Hypothesis has shrunk it and printed the falsifying example
        failure = f"{type(e).__name__}: {e}"
    seconds = time.perf_counter() - start
    answered = dict(sorted(prop.TALLY.items()))
    result = {"profile": args.profile, "cases": sum(answered.values()), "answers": answered,
              "five_xx": sum(n for k, n in answered.items() if k.startswith("5")),
              "seconds": round(seconds, 1), "failure": failure}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"profile {args.profile}: {result['cases']} deliveries sent in {result['seconds']} s "
              "(Hypothesis's shrinking included, if a case failed)")
        for answer, n in answered.items():
            print(f"  {answer}: {n}")
        print("FAILED: " + failure if failure else "no 5xx, no exception, nothing enqueued for a refused payload")
    return 1 if failure else 0


if __name__ == "__main__":
    raise SystemExit(main())

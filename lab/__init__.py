"""ptbot's lab: what builds, evaluates and retrains the models that ``analyzer`` scores with.

Training data (records, mutations), the SAE and ranker training loops, the calibration fit,
the line-state shards, the evaluation harness with its metrics and baselines, and retraining
(``rebind``, ``adapt``). The scoring runtime (``analyzer``) never imports this package, so a
review loads no training code.

Empty of imports on purpose: ``lab.mutate`` and ``lab.records`` stay stdlib-only, so the miners
reach them without loading torch.
"""

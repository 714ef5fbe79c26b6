"""ptbot's analyzer: source text in, ranked per-line risk out.

Empty of imports on purpose: ``import analyzer.types`` must stay stdlib-only so the webhook
process (which only needs the types and the diff parser) never loads torch.
"""

"""``ptbot``: the command line, and the one place that wires every package together.

Settings are read from the environment once (``Settings.from_env``) and passed down; flags
override them. Heavy imports (torch, transformers) happen inside the commands that need them, so
``ptbot --help`` and ``ptbot serve`` start fast. Progress goes to stderr, results to stdout.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import replace
from pathlib import Path

import click

from bot.config import Settings

log = logging.getLogger("ptbot")

FORMATS = ("text", "json", "sarif", "markdown", "html")


def _settings(ctx: click.Context) -> Settings:
    return ctx.obj["settings"]


def _fail(message: str) -> click.ClickException:
    return click.ClickException(message)


def _comma_list(text: str | None) -> list[str] | None:
    """``"a, b,"`` -> ["a", "b"]; None or empty -> None (the option was not given)."""
    items = [x.strip() for x in (text or "").split(",") if x.strip()]
    return items or None


def _parse_lines(spec: str | None) -> list[int] | None:
    """``3,7-9`` -> [3, 7, 8, 9]."""
    if not spec:
        return None
    out: list[int] = []
    for part in spec.split(","):
        part = part.strip()
        try:
            if "-" in part:
                a, b = (int(x) for x in part.split("-", 1))
                if a > b or a < 1:
                    raise ValueError
                out.extend(range(a, b + 1))
            else:
                n = int(part)
                if n < 1:
                    raise ValueError
                out.append(n)
        except ValueError:
            raise click.BadParameter(f"{part!r} is not a line number or range like 7-9",
                                     param_hint="--lines") from None
    return out


def _supervisor_config(settings: Settings, **overrides):
    from analyzer.supervisor import SupervisorConfig

    cfg = SupervisorConfig(device=settings.device, cache_dir=Path(settings.cache_dir).expanduser())
    return replace(cfg, **{k: v for k, v in overrides.items() if v is not None})


def _load_scorer(settings: Settings, model: str | None, quiet: bool):
    """Load the RiskScorer (model dir from --model, PTBOT_MODEL, or the packaged default)."""
    from analyzer.artifact import ArtifactError
    from analyzer.score import RiskScorer
    from analyzer.supervisor import SupervisorError

    model_dir = model or settings.model or None
    if not quiet:
        click.echo(f"loading model {model_dir or '(built-in default)'}...", err=True)
    try:
        return RiskScorer.load(model_dir, supervisor=_supervisor_config(settings), progress=not quiet)
    except (ArtifactError, SupervisorError) as e:
        raise _fail(str(e)) from e


def _write(text: str, output: str | None) -> None:
    if output and output != "-":
        Path(output).write_text(text, encoding="utf-8")
        click.echo(f"wrote {output}", err=True)
    else:
        click.echo(text, nl=False)


OUR_PACKAGES = ("analyzer", "bot", "miners", "workers", "ptbot")


def _third_party_output(shown: bool) -> None:
    """Show or hide the progress bars and warnings of the libraries ptbot runs on.

    Hidden by default, so ptbot speaks first and alone on stderr: one line of its own per stage
    and one progress bar for long work; ``-v`` shows them. transformers and huggingface_hub read
    their switches from the environment when first imported (set here, before any command
    imports them); when they are already loaded (a long-lived process, tests) their switches are
    flipped directly. The GGUF converter's bar, which ignores transformers' switch, follows it
    in ``analyzer.supervisor``.
    """
    import warnings

    if not shown:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        warnings.filterwarnings("ignore")
        warnings.filterwarnings("default", module=rf"({'|'.join(OUR_PACKAGES)})(\.|$)")
    if "transformers" in sys.modules:
        from transformers.utils import logging as transformers_logging

        if shown:
            transformers_logging.enable_progress_bar()
            transformers_logging.set_verbosity_warning()
        else:
            transformers_logging.disable_progress_bar()
            transformers_logging.set_verbosity_error()
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars, enable_progress_bars

        if not shown:
            disable_progress_bars()
        elif os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS") != "1":
            enable_progress_bars()


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("-v", "--verbose", count=True, help="More logging on stderr, with the progress bars and "
              "warnings of the libraries ptbot uses (-vv for debug).")
@click.version_option(package_name="ptbot", message="ptbot %(version)s")
@click.pass_context
def cli(ctx: click.Context, verbose: int) -> None:
    """ptbot ranks the lines of a change by the probability that they need an edit.

    It reads the code with a small "supervisor" LLM, takes the model's internal state at the end
    of every line and ranks lines with a small learned ranker on those states, whose scores are
    calibrated into probabilities; a sparse autoencoder names what stands out in a line (--explain).

    \b
    Start here:
      ptbot review                      rank the lines you changed (working tree vs HEAD)
      ptbot review --base main          ... everything since main
      ptbot score FILE --lines 10-40    rank lines of one file
    \b
    Train your own model (see README):
      ptbot mine-repo REPO --out DIR                   pretraining data from git history
      ptbot extract DATA.jsonl... --out STATES         line states in shards (pretrain --shards)
      ptbot pretrain DATA.jsonl... --out MODEL_DIR     stage 1: contrastive sparse autoencoder
      ptbot bind DATA.jsonl... --model MODEL_DIR       stage 2: ranker + calibration
      ptbot eval TEST.jsonl... --train TRAIN.jsonl     compare with every baseline
      ptbot recipe CARD --shared DIR --out MODEL_DIR   rebuild the default model from its data card
    \b
    Run it for a team:
      ptbot serve / ptbot worker                       GitHub App (webhook + Celery workers)
      ptbot action                                     GitHub Action step
      ptbot feedback sync|stats|export                 reviewers' reactions and edits as labels
      ptbot rebind DATA... --home HOME                 retrain on feedback, promote only if better
      ptbot adapt REPO --repository OWNER/NAME         a repository's own model, judged forward in time
      ptbot model list|rollback --home HOME            serving versions

    Settings come from PTBOT_* environment variables (PTBOT_MODEL, PTBOT_CACHE_DIR,
    PTBOT_DEVICE, ...); flags override them.
    """
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(level=max(level, logging.DEBUG), stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    _third_party_output(shown=verbose >= 1)
    try:
        settings = Settings.from_env(os.environ)
    except ValueError as e:
        raise _fail(f"invalid environment settings: {e}") from e
    ctx.obj = {"settings": settings}


# ------------------------------------------------------------------------------------- score


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--lines", "lines_spec", metavar="SPEC", help="Only report these lines, e.g. 3,7-9.")
@click.option("--language", help="Language name (default: from the file extension).")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--model", metavar="MODEL_DIR", help="Model directory (default: PTBOT_MODEL or built-in).")
@click.option("--top", "top_k", type=click.IntRange(min=1), help="Show only the K riskiest lines.")
@click.option("--explain", is_flag=True, help="Text format: show each line's strongest SAE latents "
              "(labelled ones by name; see `ptbot features`).")
@click.pass_context
def score(ctx, file, lines_spec, language, fmt, model, top_k, explain):
    """Rank the lines of one FILE (or - for stdin) by the probability that they need an edit."""
    from analyzer.languages import language_for_path
    from analyzer.types import Report, ScoreRequest, Skipped
    from bot.report import render_report
    from bot.review import Plan, ReviewLimits, rank_report

    lines = _parse_lines(lines_spec)
    if file == "-":
        data, path = sys.stdin.buffer.read(), "<stdin>"
    else:
        p = Path(file)
        if not p.is_file():
            raise _fail(f"no such file: {file}")
        data, path = p.read_bytes(), file
    settings = _settings(ctx)
    lang = language or language_for_path(path)
    skipped: list[Skipped] = []
    try:
        text = data.decode("utf-8")
        if "\x00" in text:
            raise UnicodeDecodeError("utf-8", data, 0, 1, "NUL byte")
    except UnicodeDecodeError:
        text = None
        skipped.append(Skipped(path, "not valid UTF-8 text (binary?)"))
    if text is not None and lang is None:
        click.echo(f"warning: unknown language for {path}; scoring it anyway "
                   "(pass --language to be explicit)", err=True)
    scorer = _load_scorer(settings, model, quiet=fmt == "json")
    req = () if text is None else (ScoreRequest(path, text, frozenset(lines) if lines else None, lang),)
    report, _ = rank_report(scorer, Plan(req, tuple(skipped), 0, {}), ReviewLimits(top_k=top_k))
    if text is not None and not report.lines:
        report = Report(report.model, (), (Skipped(path, "no scorable lines (comment, blank or punctuation only)"),))
    _write(render_report(report, fmt, explain=explain), None)


# ------------------------------------------------------------------------------------ review


@cli.command()
@click.option("--repo", default=".", show_default=True, type=click.Path(file_okay=False),
              help="Git work tree to review.")
@click.option("--base", metavar="REV", help="Compare from this revision (default: HEAD).")
@click.option("--head", metavar="REV", help="Compare to this revision (default: the working tree).")
@click.option("--diff", "diff_file", metavar="FILE|-",
              help="Review this unified diff instead of asking git (new file texts are read from --repo's working tree).")
@click.option("--top", "top_k", type=click.IntRange(min=1), default=10, show_default=True,
              help="Show at most K lines.")
@click.option("--min-probability", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Hide lines below this probability.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="text", show_default=True)
@click.option("--output", "-o", metavar="FILE", help="Write the result here instead of stdout.")
@click.option("--model", metavar="MODEL_DIR", help="Model directory (default: PTBOT_MODEL or built-in).")
@click.option("--explain", is_flag=True, help="Text format: show each line's strongest SAE latents "
              "(labelled ones by name; see `ptbot features`).")
@click.pass_context
def review(ctx, repo, base, head, diff_file, top_k, min_probability, fmt, output, model, explain):
    """Rank the added and changed lines of a change, riskiest first.

    \b
    By default: the working tree (staged, unstaged and untracked files) against HEAD.
      ptbot review --base main              main..working tree
      ptbot review --base v1.2 --head HEAD  a range of commits
      git diff | ptbot review --diff -      any unified diff

    Each changed line is scored in the context of the whole new file. Files that cannot be scored
    (binary, deleted, renamed only, unknown language, not UTF-8, too large) are listed with the
    reason. Exit code 0 unless the command itself failed.
    """
    from analyzer.diff import DiffError
    from bot.localrepo import RepoError
    from bot.report import render_report
    from bot.review import ReviewLimits
    from bot.review import review as review_change

    settings = _settings(ctx)
    quiet = fmt != "text" and not output
    if diff_file and (base or head):
        raise _fail("--diff cannot be combined with --base/--head")
    raw = None
    if diff_file:
        raw = sys.stdin.buffer.read() if diff_file == "-" else _read_bytes(diff_file)
    try:
        done = review_change(lambda: _load_scorer(settings, model, quiet=quiet), repo, base=base, head=head,
                             diff=raw, limits=ReviewLimits(top_k=top_k, min_probability=min_probability),
                             progress=not quiet, say=lambda line: click.echo(line, err=True))
    except (RepoError, DiffError) as e:
        raise _fail(str(e)) from e
    _write(render_report(done.report, fmt, files=done.texts, changed=done.changed, coverage=done.coverage,
                         explain=explain), output)


def _read_bytes(path: str) -> bytes:
    p = Path(path)
    if not p.is_file():
        raise _fail(f"no such diff file: {path}")
    return p.read_bytes()


# --------------------------------------------------------------------------------- training


def _records(paths, languages=None):
    from lab.records import RecordError, load_records

    try:
        recs = load_records([Path(p) for p in paths], languages)
    except RecordError as e:
        raise _fail(str(e)) from e
    if not recs:
        raise _fail("no records in " + ", ".join(paths) +
                    (f" for languages {', '.join(languages)}" if languages else ""))
    return recs


def _load_supervisor(settings: Settings, supervisor: str, layer: int | None):
    from analyzer.supervisor import Supervisor, SupervisorError

    click.echo(f"loading supervisor {supervisor}...", err=True)
    try:
        return Supervisor.load(_supervisor_config(settings, model=supervisor, layer=layer), progress=True)
    except SupervisorError as e:
        raise _fail(str(e)) from e


def _state_cache(ctx: click.Context, sup):
    from analyzer.features import StateCache

    return StateCache(Path(_settings(ctx).cache_dir).expanduser(), sup)


def _reading_options(fn):
    """Options that decide which texts stage 1 reads: shared by `pretrain` and `extract`, which
    must make the very same texts."""
    options = [
        click.option("--supervisor", default="qwen2.5-coder-0.5b", show_default=True,
                     help="Supervisor LLM: an embedded name (qwen2.5-coder-0.5b, qwen2.5-coder-1.5b, smollm2, "
                          "gemma3-270m), a hub id, a local dir or a .gguf file."),
        click.option("--layer", type=click.IntRange(min=1), help="Decoder block to probe (default: ceil(L/4))."),
        click.option("--languages", help="Only records of these languages (comma-separated)."),
        click.option("--mutations", default=2, show_default=True, type=click.IntRange(min=0),
                     help="Mutated copies per clean snippet (swap, foreign line, delete)."),
        click.option("--fine-mutations", is_flag=True, help="Also use operator-level mutations."),
        click.option("--dev-fraction", default=0.2, show_default=True, type=click.FloatRange(0, 1, max_open=True),
                     help="Leave out the problems `ptbot bind` will hold out for its dev split (same seed)."),
        click.option("--max-records", type=click.IntRange(min=1), help="Use a seeded random subset of the records."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


@cli.command()
@click.argument("data", nargs=-1, type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Model directory to create (resumes from its checkpoints if interrupted).")
@click.option("--shards", "shards_dir", type=click.Path(file_okay=False, exists=True),
              help="Train on line states made by `ptbot extract` instead of DATA (no supervisor run; "
                   "records, mutations, dev split, supervisor and layer are those of the extraction).")
@_reading_options
@click.option("--latents", type=click.IntRange(min=1), help="SAE dictionary size (default 4 x hidden).")
@click.option("--k", "topk", type=click.IntRange(min=1), help="Active latents per line (default 32).")
@click.option("--contrastive-weight", type=click.FloatRange(min=0), help="Weight of the contrastive loss (0 = off).")
@click.option("--epochs", type=click.IntRange(min=1), help="SAE training epochs.")
@click.option("--name", help="Model name recorded in the manifest (default: the directory name).")
@click.option("--seed", default=0, show_default=True)
@click.pass_context
def pretrain(ctx, data, out_dir, shards_dir, supervisor, layer, languages, mutations, fine_mutations, latents,
             topk, contrastive_weight, epochs, dev_fraction, max_records, name, seed):
    """Stage 1: train the contrastive TopK sparse autoencoder on DATA (JSONL, shared schema).

    Every record gives its buggy code and its fixed version, paired line by line; clean code also
    gets MUTATIONS mutated copies (two lines swapped, a line from another snippet, a line deleted).

    \b
    With line states read beforehand (on GPU workers, say):
      ptbot extract DATA.jsonl... --out states/ --queue
      ptbot pretrain --shards states/ --out MODEL_DIR
    """
    from lab.train import pretrain as run

    sae = {k: v for k, v in {"n_latents": latents, "k": topk, "contrastive_weight": contrastive_weight,
                             "epochs": epochs}.items() if v is not None}
    if shards_dir:
        return _pretrain_from_shards(ctx, data, shards_dir, out_dir, sae, name, seed)
    if not data:
        raise _fail("give DATA.jsonl file(s) to train on, or --shards DIR made by `ptbot extract`")
    langs = _comma_list(languages)
    recs = _records(data, langs)
    sup = _load_supervisor(_settings(ctx), supervisor, layer)
    try:
        manifest = run(sup, recs, Path(out_dir), sae_cfg=sae, mutations=mutations,
                       fine_mutations=fine_mutations, seed=seed, cache=_state_cache(ctx, sup),
                       holdout=dev_fraction or None, max_records=max_records, name=name)
    except ValueError as e:
        raise _fail(str(e)) from e
    t = manifest["sae_training"]
    click.echo(f"SAE trained on {t['lines']:,} lines ({t['pairs']:,} pairs): "
               f"fvu {t.get('fvu', float('nan')):.3f}, dead {t.get('dead_fraction', 0):.1%}; "
               f"wrote {out_dir}", err=True)


@cli.command()
@click.argument("data", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--model", "model_dir", required=True, type=click.Path(file_okay=False, exists=True),
              help="Model directory made by `ptbot pretrain`.")
@click.option("--languages", help="Only records of these languages (comma-separated).")
@click.option("--dev-fraction", default=0.2, show_default=True, type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="Share of problems held out for early stopping (and calibration, when DATA has fewer than "
                   "two sources).")
@click.option("--epochs", type=click.IntRange(min=1), help="Maximum ranker epochs (default 60, stopped early "
              "when the dev split stops improving).")
# The defaults are analyzer.ranker.RankerConfig's (the shipped recipe's), spelled out so that
# `--help` does not import torch (tests check that they agree).
@click.option("--length-prior", default=3.0, show_default=True, type=click.FloatRange(min=0),
              help="Weight of the longest-line prior added to the ranker's scores (declaration lines get "
                   "none). The default is the shipped recipe's, chosen on the corpus's validation "
                   "repositories; 0 = the ranker alone.")
@click.option("--members", default=5, show_default=True, type=click.IntRange(min=1),
              help="MLPs trained apart (seeds SEED, SEED+1, ...) whose logits are averaged. The default is the "
                   "shipped recipe's: averaging removes most of the spread between seeds.")
@click.option("--version", "model_version", help="Version recorded in the manifest (default: the training time).")
@click.option("--feedback-db", metavar="URL",
              help="Also train on reviewers' feedback from this label store and promote the result only if "
                   "it beats the serving version on held-out feedback; MODEL_DIR must then be a model home "
                   "(`ptbot model init`). Same as `ptbot rebind DATA --home MODEL_DIR --feedback-db URL`.")
@click.option("--seed", default=0, show_default=True)
@click.pass_context
def bind(ctx, data, model_dir, languages, dev_fraction, epochs, length_prior, members, model_version, feedback_db,
         seed):
    """Stage 2: train the ranker (NeuralNDCG + pointwise head) and calibrate it on DATA.

    The ranker reads each line's state (centred on its file), shape, position and declaration
    columns; the centred calibration map is fitted on each source of DATA (the records' `source`
    field) scored by a ranker trained without it, so the probabilities stay honest on code unlike
    the training data (one extra ranker per source; with fewer than two sources, on the dev split).
    The defaults are the shipped model's recipe (`ptbot recipe` rebuilds it).
    """
    if feedback_db:
        from click.core import ParameterSource

        if model_version or any(ctx.get_parameter_source(n) not in (ParameterSource.DEFAULT, None)
                                for n in ("length_prior", "members")):
            raise _fail("--length-prior, --members and --version are not used with --feedback-db "
                        "(a re-bind trains the recipe's ranker and numbers its own versions)")
        return ctx.invoke(rebind_cmd, data=data, home=model_dir, feedback_db=feedback_db, repo=None,
                          languages=languages, holdout=0.3, metric="top1", min_gain=0.0,
                          dev_fraction=dev_fraction, epochs=epochs, seed=seed)
    from analyzer.artifact import ArtifactError, read_manifest
    from lab.train import bind as run

    langs = _comma_list(languages)
    recs = _records(data, langs)
    try:
        manifest = read_manifest(Path(model_dir))
    except ArtifactError as e:
        raise _fail(str(e)) from e
    sup = _load_supervisor(_settings(ctx), manifest["supervisor"]["model"], manifest["supervisor"]["layer"])
    rcfg = {k: v for k, v in {"epochs": epochs, "length_prior": length_prior,
                              "members": members}.items() if v is not None}
    try:
        manifest = run(sup, Path(model_dir), recs, ranker_cfg=rcfg, dev_fraction=dev_fraction,
                       seed=seed, cache=_state_cache(ctx, sup), version=model_version)
    except (ArtifactError, ValueError) as e:
        raise _fail(str(e)) from e
    m = manifest["dev_metrics"]
    click.echo("dev split: " + ", ".join(f"{k} {m[k]:.3f}" for k in ("top1", "top3", "top5", "auroc", "bss", "ece")
                                         if isinstance(m.get(k), float)) + f"; wrote {model_dir}", err=True)


# ------------------------------------------------------------------------------------ mining


@cli.command("mine-repo")
@click.argument("repo", nargs=-1, required=True)
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Output directory for JSONL shards + manifest.json.")
@click.option("--rev", default="HEAD", show_default=True, help="Revision (range) to walk.")
@click.option("--since", help="Only commits after this date (git syntax, e.g. 2024-01-01).")
@click.option("--until", help="Only commits before this date.")
@click.option("--max-commits", type=click.IntRange(min=1), help="Stop after this many commits.")
@click.option("--languages", multiple=True, help="Only these languages (repeatable; default all known).")
@click.option("--include", multiple=True, metavar="GLOB", help="Only paths matching (repeatable).")
@click.option("--exclude", multiple=True, metavar="GLOB", help="Skip paths matching (repeatable).")
@click.option("--mutations", default=0, show_default=True, type=click.IntRange(min=0),
              help="Mutated copies per clean snippet.")
@click.option("--fine-mutations", is_flag=True, help="Also operator-level mutations (off-by-one, swapped args...).")
@click.option("--seed", default=0, show_default=True)
@click.option("--workers", default=1, show_default=True, type=click.IntRange(min=1))
@click.option("--resume", is_flag=True, help="Continue an interrupted run in --out without duplicates.")
@click.option("--name", help="Repository name recorded in meta (default: from the path or URL).")
@click.option("--queue", is_flag=True,
              help="Mine on Celery workers (cpu queue, Redis at PTBOT_REDIS_URL): one task per range of "
                   "commits, merged here; accepts several REPOs. Workers must see REPO and --out at the "
                   "same path (shared file system) or REPO as a URL they can clone.")
@click.option("--range-commits", default=500, show_default=True, type=click.IntRange(1, 1500),
              help="Commits per task with --queue (keep a task under the worker's time limit).")
def mine_repo_cmd(repo, out_dir, rev, since, until, max_commits, languages, include, exclude,
                  mutations, fine_mutations, seed, workers, resume, name, queue, range_commits):
    """Turn REPO's git history into contrastive pretraining data.

    REPO is a work tree, a bare repository or a clone URL. Bug-fix commits (message cues and
    small diffs) become (buggy, fixed) snippet pairs with the replaced lines labelled; with
    --mutations, clean code also yields mutated copies. Output passes the shared schema check.

    \b
      ptbot mine-repo ~/src/project --out mined/project --mutations 2
      ptbot pretrain mined/project/*.jsonl --out my-model
    \b
    Scale out (start `ptbot worker --queues cpu --training-only` where /data is mounted too):
      ptbot mine-repo /data/a /data/b --out /data/mined --queue
    The queued output equals a local run's; several repositories are merged in the order given,
    duplicates dropped across them.
    """
    from miners.mine import MineConfig, MiningError, mine_repo

    if len(repo) > 1 and not queue:
        raise _fail("several repositories need --queue (or mine each into its own --out)")
    if len(repo) > 1 and name:
        raise _fail("--name names one repository; leave it out when mining several")
    try:
        configs = [MineConfig(
            repo=r, out=Path(out_dir), name=name, rev=rev, since=since, until=until,
            max_commits=max_commits, languages=tuple(languages), include=tuple(include),
            exclude=tuple(exclude), mutations=mutations, fine_mutations=fine_mutations, seed=seed,
            workers=workers, resume=resume) for r in repo]
        if queue:
            manifest = _mine_on_queue(configs, resume, range_commits)
        else:
            manifest = mine_repo(configs[0], progress=True)
    except (ValueError, MiningError) as e:
        raise _fail(str(e)) from e
    click.echo(json.dumps(manifest.to_dict(), indent=2))


@cli.group("corpus")
def corpus_group() -> None:
    """The real-fix training corpus: rebuilt from a committed data card, never committed itself."""


@corpus_group.command("build")
@click.argument("card", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Directory for train.jsonl, validation.jsonl, test.jsonl, corpus.json and mined/.")
@click.option("--repos", "repos_dir", type=click.Path(file_okay=False, exists=True),
              help="Directory holding clones as OWNER+NAME/ or OWNER/NAME/ (else each card URL is cloned).")
@click.option("--reserved", "reserved_dir", envvar="PTBOT_RESERVED_DIR", required=True,
              type=click.Path(file_okay=False, exists=True),
              help="Folder with reserved-projects.txt and reserved-debian-packages.txt; a card naming a "
                   "reserved project is refused.")
def corpus_build(card, out_dir, repos_dir, reserved_dir):
    """Rebuild the corpus CARD describes: mine each repository at its pinned commit, keep focused
    fixes, drop snippets shared across repositories, split by repository, sample.

    \b
      ptbot corpus build data/corpus-card.json --out corpus/ --repos ~/src --reserved ../shared/data
    Interrupted? Run it again: finished repositories are not mined twice.
    """
    from miners.corpus import Card, CorpusError, build

    try:
        summary = build(Card.load(Path(card)), Path(out_dir), reserved_dir=Path(reserved_dir),
                        repos_dir=Path(repos_dir) if repos_dir else None, progress=True,
                        log=lambda msg: click.echo(msg, err=True))
    except CorpusError as e:
        raise _fail(str(e)) from e
    for split, langs in summary["counts"].items():
        total = sum(c["records"] for c in langs.values())
        click.echo(f"{split}: {total:,} records (" + ", ".join(f"{k} {v['records']}" for k, v in langs.items())
                   + ")", err=True)
    click.echo(f"wrote {out_dir}", err=True)


@cli.command("recipe")
@click.argument("card", type=click.Path(exists=True, dir_okay=False))
@click.option("--shared", "shared_dir", required=True, type=click.Path(file_okay=False, exists=True),
              help="The shared data directory: the reserved-project lists the corpus is checked against and "
                   "the Python benchmark sets the ranker also trains on.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Model directory to write (e.g. analyzer/default_model).")
@click.option("--corpus", "corpus_dir", default="corpus", show_default=True, type=click.Path(file_okay=False),
              help="Where the corpus is built (kept: rerun to resume; `ptbot eval` reads its splits).")
@click.option("--repos", "repos_dir", type=click.Path(file_okay=False, exists=True),
              help="Directory of local clones (OWNER+NAME/repo or OWNER/NAME) instead of cloning each URL.")
@click.option("--version", "model_version", required=True, help="Version recorded in the manifest.")
@click.option("--keep-sae", is_flag=True,
              help="--out already holds this recipe's SAE (stage 1): only train the ranker and its calibration.")
@click.pass_context
def recipe_cmd(ctx, card, shared_dir, out_dir, corpus_dir, repos_dir, model_version, keep_sae):
    """Rebuild the default model from its data CARD: build the corpus, then train the recipe on it.

    The recipe (supervisor, layer, SAE size, length prior, ensemble size...) is
    `lab.recipe.Recipe`; every choice in it was made on the corpus's validation repositories, and
    the manifest records it. On two CPU cores the first run reads about 1,400 snippets (~25 min);
    the line-state cache makes a rerun cheap.

    \b
      ptbot recipe data/corpus-card.json --shared ../shared/data --repos ~/src --out analyzer/default_model --version 0.8.0
    """
    from analyzer.artifact import ArtifactError
    from lab.recipe import Recipe, build
    from miners.corpus import Card, CorpusError
    from miners.corpus import build as build_corpus

    recipe = Recipe()
    try:
        build_corpus(Card.load(Path(card)), Path(corpus_dir), reserved_dir=Path(shared_dir),
                     repos_dir=Path(repos_dir) if repos_dir else None, progress=True,
                     log=lambda msg: click.echo(msg, err=True))
        sup = _load_supervisor(_settings(ctx), recipe.supervisor, recipe.layer)
        build(recipe, sup, Path(corpus_dir), Path(shared_dir), Path(out_dir), version=model_version,
              cache=_state_cache(ctx, sup), keep_sae=keep_sae)
    except (CorpusError, ArtifactError, FileNotFoundError, ValueError) as e:
        raise _fail(str(e)) from e
    click.echo(f"wrote {out_dir} (version {model_version})", err=True)


# ------------------------------------------------------------------------------- GitHub App


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535))
@click.option("--eager", is_flag=True,
              help="Run reviews inside this process (no Redis, no worker): a one-machine trial.")
@click.pass_context
def serve(ctx, host, port, eager):
    """Receive GitHub App webhooks: POST /webhook, GET /healthz, GET /metrics.

    Deliveries are verified (PTBOT_WEBHOOK_SECRET), de-duplicated in Redis and queued for
    `ptbot worker`; with --eager they run in a background thread of this process instead.
    """
    from werkzeug.serving import run_simple

    from bot.webhook import MemoryDeliveryDeduper, RedisDeliveryDeduper, create_app

    settings = _settings(ctx)
    if not settings.webhook_secret:
        raise _fail("PTBOT_WEBHOOK_SECRET is not set: every delivery would be refused. Set it to "
                    "the secret entered in the GitHub App's webhook settings.")
    if eager:
        from workers.tasks import InProcessQueue, eager_runtime

        try:
            settings.require_app()
        except ValueError as e:
            raise _fail(str(e)) from e
        enqueue, dedupe = InProcessQueue(eager_runtime(settings)), MemoryDeliveryDeduper()
    else:
        from workers.producer import celery_enqueue, make_producer

        enqueue, dedupe = celery_enqueue(make_producer(settings)), RedisDeliveryDeduper.from_url(settings.redis_url)
    click.echo(f"ptbot listening on http://{host}:{port}/webhook"
               f"{' (eager: reviews run in this process)' if eager else ''}", err=True)
    run_simple(host, port, create_app(settings, enqueue, dedupe), threaded=True)


@cli.command()
@click.option("--queues", default="cpu,gpu", show_default=True,
              help="Queues to consume: cpu (GitHub I/O), gpu (scoring; loads the model), or both.")
@click.option("--concurrency", default=1, show_default=True, type=click.IntRange(min=1),
              help="Worker processes (each gpu process holds its own copy of the model).")
@click.option("--beat", is_flag=True, help="Also run the scheduler that harvests reviewers' reactions.")
@click.option("--training-only", is_flag=True,
              help="A worker for `mine-repo --queue` (cpu) and `extract --queue` (gpu) only: no GitHub App "
                   "credentials, no model preloaded. Give it its own Redis (PTBOT_REDIS_URL) if the App "
                   "uses one: the queues are shared.")
@click.pass_context
def worker(ctx, queues, concurrency, beat, training_only):
    """Run a Celery worker for the GitHub App's reviews (Redis at PTBOT_REDIS_URL).

    Reviewer feedback (reactions, resolutions, follow-up edits) is recorded in the label store at
    PTBOT_DATABASE_URL; run exactly one worker with --beat (or a separate `celery beat`).
    Workers also run `mine-repo --queue` ranges and `extract --queue` shards; they must see the
    repositories and output directories at the producer's paths.
    """
    from workers.celery_app import enable_feedback, make_celery, worker_argv
    from workers.producer import WorkerConfig

    settings = _settings(ctx)
    names = {q.strip() for q in queues.split(",") if q.strip()}
    if not names or names - {"cpu", "gpu"}:
        raise click.BadParameter("use cpu, gpu or cpu,gpu", param_hint="--queues")
    try:
        if not training_only:
            settings.require_app()
        argv = worker_argv(queues, concurrency,
                           "DEBUG" if ctx.find_root().params.get("verbose", 0) >= 2 else "INFO")
    except ValueError as e:
        raise _fail(str(e)) from e
    app = make_celery(settings, WorkerConfig(preload_scorer="gpu" in names and not training_only))
    if not training_only:
        enable_feedback(app, settings.database_url)
    if settings.adapt_mirrors:
        from workers.celery_app import enable_adaptation

        enable_adaptation(app)
    app.worker_main(argv + (["--beat"] if beat else []))


# ----------------------------------------------------------------------------- eval, features


def _model_dir_or_default(settings: Settings, model: str | None) -> Path | None:
    """--model, else PTBOT_MODEL, else the packaged model if it has been trained."""
    from analyzer.artifact import MANIFEST, default_model_dir, resolve_model_dir

    if model or settings.model:
        return resolve_model_dir(model or settings.model)
    d = default_model_dir()
    return d if (d / MANIFEST).exists() else None


@cli.command("eval")
@click.argument("tests", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--train", "train_files", multiple=True, metavar="TRAIN.jsonl",
              help="Training file(s): repeat the flag or separate with commas. Trainable methods learn "
                   "only from these (split by problem into fit/dev). pttrust and probe train with --model's "
                   "ranker settings and calibrate as `ptbot bind` does.")
@click.option("--methods", default="pttrust,probe,lookback,lookback_mlp,uncertainty,length,random",
              show_default=True, help="Comma-separated methods to compare.")
@click.option("--model", metavar="MODEL_DIR", help="Model directory (supervisor, layer, SAE; default: "
              "PTBOT_MODEL or built-in). Without --train, pttrust is its shipped ranker.")
@click.option("--json", "json_out", metavar="FILE", help="Write the results as JSON.")
@click.option("--plots", "plots_dir", metavar="DIR", help="Write PNG plots and report.html here.")
@click.option("--seeds", default=1, show_default=True, type=click.IntRange(min=1),
              help="Seeds per trainable method (mean and spread are reported).")
@click.option("--boot", default=1000, show_default=True, type=click.IntRange(min=0),
              help="Bootstrap replicates for 95% intervals (0 = none).")
@click.option("--dev-fraction", default=0.2, show_default=True,
              type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="Share of training problems held out for early stopping (and calibration, when the "
                   "training files have fewer than two sources).")
@click.option("--ranker-epochs", type=click.IntRange(min=1), help="Maximum ranker epochs (pttrust, probe).")
@click.option("--snippet-auroc/--no-snippet-auroc", default=True, show_default=True,
              help="Also read each test record's fixed version, as a clean snippet for snippet-level AUROC.")
@click.option("--layer", type=click.IntRange(min=1),
              help="Probe this decoder layer of the supervisor (PTBOT_SUPERVISOR) instead of a model's: "
                   "for layer sweeps of the SAE-free methods (probe, length, ...); pttrust needs --model.")
@click.option("--supervisor", metavar="NAME", help="With --layer: the supervisor LLM to probe (smollm2, "
              "gemma3-270m, qwen2.5-coder-0.5b/1.5b, a hub id, a local dir or a .gguf file; default qwen2.5-coder-0.5b).")
@click.pass_context
def eval_cmd(ctx, tests, train_files, methods, model, json_out, plots_dir, seeds, boot, dev_fraction,
             ranker_epochs, snippet_auroc, layer, supervisor):
    """Compare PtTrust with the baselines on each TEST file (JSONL, shared schema).

    \b
      ptbot eval ../shared/data/humanevalpack-go.jsonl \\
          --train ../shared/data/quixbugs-python.jsonl,../shared/data/humanevalpack-python.jsonl \\
          --json results.json --plots plots/

    Prints one table per test file (named by its file stem). Line states and full-model features
    are cached under PTBOT_CACHE_DIR, so a second run does not read the code again.
    """
    from analyzer.artifact import ArtifactError
    from analyzer.supervisor import SupervisorError
    from bot.eval_report import render_table, write_plots
    from lab.evaluate import EvalConfig, run_eval

    settings = _settings(ctx)
    try:
        cfg = EvalConfig(methods=tuple(m.strip() for m in methods.split(",") if m.strip()), seeds=seeds,
                         n_boot=boot, dev_fraction=dev_fraction, ranker_epochs=ranker_epochs,
                         fixed_negatives=snippet_auroc, progress=True)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--methods") from e
    train_paths = [p.strip() for f in train_files for p in f.split(",") if p.strip()]
    for p in train_paths:
        if not Path(p).is_file():
            raise _fail(f"no such training file: {p}")
    stems = [Path(p).stem for p in tests]
    if len(set(stems)) != len(stems):
        raise _fail("two test files share a file name; results are keyed by file stem")
    train = _records(train_paths) if train_paths else []
    test_sets = {Path(p).stem: _records([p]) for p in tests}
    cache_root = Path(settings.cache_dir).expanduser()
    sup_cfg = _supervisor_config(settings)
    model_dir = _model_dir_or_default(settings, model)
    if supervisor and layer is None:
        raise click.UsageError("--supervisor goes with --layer (a model directory names its own supervisor)")
    if layer is not None:
        if model:
            raise click.UsageError("--layer probes the bare supervisor; it cannot be combined with --model "
                                   "(a model fixes its layer)")
        if "pttrust" in cfg.methods:
            raise click.UsageError("pttrust needs a model's SAE, which is trained at one layer; drop it "
                                   "from --methods when sweeping --layer")
        model_dir, sup_cfg = None, replace(sup_cfg, layer=layer, **({"model": supervisor} if supervisor else {}))
    try:
        report = run_eval(train, test_sets, cfg, model_dir=model_dir, supervisor=sup_cfg, cache_root=cache_root)
    except (ArtifactError, SupervisorError, ValueError) as e:
        raise _fail(str(e)) from e
    doc = report.to_json()
    click.echo(render_table(doc))
    if json_out:
        Path(json_out).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        click.echo(f"wrote {json_out}", err=True)
    if plots_dir:
        paths = write_plots(doc, Path(plots_dir))
        click.echo(f"wrote {len(paths)} files to {plots_dir} (open {paths[-1]})", err=True)


@cli.command("features")
@click.argument("data", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--model", metavar="MODEL_DIR", help="Model directory (default: PTBOT_MODEL or built-in).")
@click.option("--top", default=20, show_default=True, type=click.IntRange(min=1), help="Latents to list.")
@click.option("--examples", default=3, show_default=True, type=click.IntRange(min=0),
              help="Top-activating example lines per latent.")
@click.option("--json", "json_out", metavar="FILE", help="Also write the listing as JSON.")
@click.option("--label", "labels", multiple=True, metavar="LATENT=TEXT",
              help="Store a short label for a latent in the model's manifest (repeatable; empty TEXT "
                   "removes it). `ptbot review` shows labels next to a flag's top latents.")
@click.pass_context
def features_cmd(ctx, data, model, top, examples, json_out, labels):
    """List the SAE latents most associated with buggy lines in DATA, with example lines.

    Association = mean activation on buggy lines minus mean activation on correct lines.
    """
    from analyzer.artifact import ArtifactError
    from analyzer.supervisor import SupervisorError
    from bot.eval_report import render_latents
    from lab.evaluate import latent_associations, open_model, write_latent_labels

    settings = _settings(ctx)
    model_dir = _model_dir_or_default(settings, model)
    if model_dir is None:
        raise _fail("no model directory: pass --model (built by `ptbot pretrain`)")
    parsed: dict[int, str] = {}
    for spec in labels:
        key, sep, text = spec.partition("=")
        if not sep or not key.strip().isdigit():
            raise click.BadParameter(f"{spec!r} is not LATENT=TEXT, e.g. 17='off-by-one loop bound'",
                                     param_hint="--label")
        parsed[int(key)] = text
    try:
        if parsed:
            write_latent_labels(model_dir, parsed)
            click.echo(f"stored {len(parsed)} latent label(s) in {model_dir}", err=True)
        loaded = open_model(model_dir, _supervisor_config(settings))
        assoc = latent_associations(loaded, _records(data), top=top, examples=examples,
                                    cache=_state_cache(ctx, loaded.sup), progress=True)
    except (ArtifactError, SupervisorError, ValueError) as e:
        raise _fail(str(e)) from e
    rows = [a.to_dict() for a in assoc]
    click.echo(render_latents(rows), nl=False)
    if json_out:
        Path(json_out).write_text(json.dumps({"latents": rows}, indent=2) + "\n", encoding="utf-8")
        click.echo(f"wrote {json_out}", err=True)


@cli.command("action")
@click.pass_context
def action_cmd(ctx):
    """Review this workflow run's pull request (a GitHub Actions step; see action.yml).

    Reads GITHUB_EVENT_PATH, GITHUB_REPOSITORY, GITHUB_TOKEN and GITHUB_API_URL plus the action's
    INPUT_* variables; posts one review (annotations when the token is read-only), writes SARIF,
    the step summary and the step outputs. Exit code 1 only when fail-on is reached.
    """
    from github import GithubException

    from bot.action import ActionSettings, run_action

    settings = _settings(ctx)
    try:
        action = ActionSettings.from_env(os.environ)
        # Annotations and workflow commands go to stdout, where the runner reads them.
        # The action's own model input wins; else the repository's promoted model (PTBOT_MODEL_HOMES).
        model = action.model or settings.model_for(action.repository) or None
        result = run_action(action, lambda: _load_scorer(settings, model, quiet=False),
                            defaults=settings.repo_defaults, stdout=sys.stdout)
    except ValueError as e:
        raise _fail(str(e)) from e
    except GithubException as e:
        raise _fail(f"GitHub answered {e.status}: {e.data}") from e
    click.echo(f"ptbot: {result.status}: {result.detail}", err=True)
    ctx.exit(result.exit_code)


# ---------------------------------------------------------------------------------- feedback


@cli.group("feedback")
def feedback_group() -> None:
    """Reviewer feedback on the App's comments: poll it, measure it, export it as labels.

    The label store is PTBOT_DATABASE_URL (default: SQLite in PTBOT_CACHE_DIR).
    """


def _label_store(ctx: click.Context):
    from bot.store import LabelStore

    try:
        return LabelStore(_settings(ctx).database_url)
    except Exception as e:  # a wrong URL or an unreachable server: say which
        raise _fail(f"cannot open the label store {_settings(ctx).database_url}: {e}") from e


@feedback_group.command("sync")
@click.option("--all", "everything", is_flag=True, help="Poll every tracked PR now, not only those due.")
@click.pass_context
def feedback_sync(ctx, everything):
    """Poll reactions on ptbot's comments now (beat does this on a decaying schedule)."""
    from bot.feedback import FeedbackSettings, GitHubFeedbackAPI, harvest_due
    from bot.github import GitHubApp

    store = _label_store(ctx)
    try:
        app = GitHubApp.from_settings(_settings(ctx))
    except ValueError as e:
        raise _fail(str(e)) from e
    results = harvest_due(store, lambda row: GitHubFeedbackAPI(
        app.pull_request(row.installation_id, *row.repo.split("/", 1), row.number), store),
        FeedbackSettings(), force=everything)
    for r in results:
        click.echo(f"{r.repo}#{r.number}: {r.linked} comment(s), {r.votes} vote(s) written, "
                   f"{r.retracted} retracted, {r.unchanged} unchanged")
    click.echo(f"polled {len(results)} pull request(s)")


@feedback_group.command("stats")
@click.option("--repo", help="Only this repository (owner/name).")
@click.option("--k", default=5, show_default=True, type=click.IntRange(min=1), help="Precision at k.")
@click.option("--plot", default="feedback-stats.png", show_default=True, type=click.Path(dir_okay=False),
              help="Where to write the PNG plot.")
@click.pass_context
def feedback_stats_cmd(ctx, repo, k, plot):
    """Label counts and precision@k per repository and model version, plus a PNG plot."""
    from bot.feedback import feedback_stats, plot_stats

    stats = feedback_stats(_label_store(ctx), repo, k)
    for name, n in sorted(stats.events.items()):
        click.echo(f"{name:28s} {n:6d}")
    for (r, version), m in stats.per_model.items():
        p = "n/a" if m["precision_at_k"] != m["precision_at_k"] else f"{m['precision_at_k']:.3f}"
        click.echo(f"{r} {version}: scored {m['scored']:.0f}, labelled {m['labelled']:.0f}, "
                   f"positive {m['positive']:.0f}, precision@{k} {p}")
    click.echo(f"plot: {plot_stats(stats, plot)}")


@feedback_group.command("export")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="JSONL file to write.")
@click.option("--repo", help="Only this repository (owner/name).")
@click.pass_context
def feedback_export(ctx, out, repo):
    """Write feedback labels as records in the shared dataset schema (for bind and eval)."""
    from bot.feedback import write_export

    summary = write_export(_label_store(ctx), out, repo)
    skipped = ", ".join(f"{k}: {v}" for k, v in sorted(summary.skipped.items())) or "none"
    click.echo(f"wrote {summary.records} record(s) to {out} ({summary.positive_lines} positive and "
               f"{summary.negative_lines} negative line(s); skipped snapshots: {skipped})")


# ------------------------------------------------------------------------- gated re-binding


@cli.command("rebind")
@click.argument("data", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--home", required=True, type=click.Path(file_okay=False, exists=True),
              help="Model home made by `ptbot model init` (versions + current.json).")
@click.option("--feedback-db", metavar="URL", help="Label store to export feedback from (default: PTBOT_DATABASE_URL).")
@click.option("--repo", help="Only feedback of this repository (owner/name).")
@click.option("--languages", help="Only records of these languages (comma-separated).")
@click.option("--holdout", default=0.3, show_default=True, type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="Share of feedback problems held out to judge the serving and the new version.")
@click.option("--metric", default="top1", show_default=True,
              type=click.Choice(["top1", "top3", "top5", "auroc", "bss", "brier", "ece"]),
              help="`ptbot eval` metric that decides.")
@click.option("--min-gain", default=0.0, show_default=True, type=click.FloatRange(min=0),
              help="Promote only if the new version is at least this much better on --metric.")
@click.option("--dev-fraction", default=0.2, show_default=True, type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="Share of training problems held out for early stopping (and calibration, when the "
                   "records have fewer than two sources).")
@click.option("--epochs", type=click.IntRange(min=1), help="Maximum ranker epochs.")
@click.option("--seed", default=0, show_default=True)
@click.pass_context
def rebind_cmd(ctx, data, home, feedback_db, repo, languages, holdout, metric, min_gain, dev_fraction,
               epochs, seed):
    """Re-bind on seed DATA plus reviewer feedback; promote the new ranker only if it wins.

    Feedback labels are exported from the label store, split by problem into a training part and
    a held-out part; a new version (copy of the serving one, same SAE) is trained on DATA + the
    training part; both versions are scored on the held-out part with the `ptbot eval` metrics.
    The new version serves only if its --metric beats the serving one by --min-gain; otherwise it
    is kept as "refused" for inspection. Exit code 0 either way; the last line says which.
    """
    import tempfile

    from analyzer import versions
    from analyzer.artifact import ArtifactError, read_manifest
    from bot.feedback import write_export
    from bot.store import LabelStore
    from lab.rebind import rebind_with_gate
    from lab.records import load_records

    langs = _comma_list(languages)
    seed_records = _records(data, langs)
    url = feedback_db or _settings(ctx).database_url
    try:
        store = LabelStore(url)
    except Exception as e:  # a wrong URL or an unreachable server: say which
        raise _fail(f"cannot open the label store {url}: {e}") from e
    try:
        with tempfile.TemporaryDirectory() as tmp:
            summary = write_export(store, Path(tmp) / "feedback.jsonl", repo)
            feedback = load_records([Path(tmp) / "feedback.jsonl"], langs)
    finally:
        store.close()
    click.echo(f"feedback: {summary.records} record(s) ({summary.positive_lines} positive, "
               f"{summary.negative_lines} negative line(s))", err=True)
    try:
        manifest = read_manifest(versions.current_dir(Path(home)))
    except ArtifactError as e:
        raise _fail(str(e)) from e
    sup = _load_supervisor(_settings(ctx), manifest["supervisor"]["model"], manifest["supervisor"]["layer"])
    try:
        result = rebind_with_gate(sup, Path(home), seed_records, feedback, holdout=holdout, seed=seed,
                                  min_gain=min_gain, metric=metric, dev_fraction=dev_fraction,
                                  ranker_cfg={"epochs": epochs} if epochs else None,
                                  cache=_state_cache(ctx, sup))
    except (ArtifactError, ValueError) as e:
        raise _fail(str(e)) from e
    verdict = "PROMOTED" if result.promoted else "REFUSED"
    click.echo(f"{verdict} version {result.version} (serving now: "
               f"{result.version if result.promoted else result.serving}); {result.reason}")


# ------------------------------------------------------------- per-repository adaptation


@cli.command("adapt")
@click.argument("repo")
@click.option("--home", type=click.Path(file_okay=False),
              help="Model home of this repository (created from --from when missing). Default: "
                   "PTBOT_MODEL_HOMES/OWNER/NAME, with --repository.")
@click.option("--repository", metavar="OWNER/NAME",
              help="The repository's GitHub name: names it in results, selects its feedback and its home "
                   "under PTBOT_MODEL_HOMES (default: REPO's last part).")
@click.option("--until", metavar="DATE|REV",
              help="The cut: fit on commits up to this date (YYYY-MM-DD) or revision, judge on later fixes.")
@click.option("--holdout-months", default=6, show_default=True, type=click.IntRange(min=1),
              help="Without --until: the newest N months of history are the forward slice.")
@click.option("--rev", default="HEAD", show_default=True, help="Revision whose history is mined.")
@click.option("--mutations", default=1, show_default=True, type=click.IntRange(min=0),
              help="Mutated copies of each clean snippet committed before the cut (0: real fixes only).")
@click.option("--max-commits", type=click.IntRange(min=1), help="Mine at most this many commits (newest first).")
@click.option("--languages", help="Only these languages (comma-separated).")
@click.option("--feedback-db", metavar="URL",
              help="Also use reviewers' feedback on --repository from this label store (e.g. PTBOT_DATABASE_URL).")
@click.option("--seed-data", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Shared-schema JSONL added to the fit side (repeatable), e.g. the default model's bind data.")
@click.option("--from", "base_model", type=click.Path(file_okay=False, exists=True),
              help="Model a new home starts from (default: PTBOT_MODEL or the built-in model).")
@click.option("--metric", default="top1", show_default=True,
              type=click.Choice(["top1", "top3", "top5", "auroc", "bss", "brier", "ece"]),
              help="Metric on the forward slice that decides.")
@click.option("--min-gain", default=0.02, show_default=True, type=click.FloatRange(min=0),
              help="Promote only if the adapted model beats the serving one by at least this much.")
@click.option("--dev-fraction", default=0.2, show_default=True, type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="Share of fit problems held out for early stopping (and calibration, when the fit records "
                   "have fewer than two sources).")
@click.option("--epochs", type=click.IntRange(min=1), help="Maximum ranker epochs.")
@click.option("--seed", default=0, show_default=True)
@click.option("--report", "report_dir", type=click.Path(file_okay=False),
              help="Write the tables, Top-K curves (PNG, overall and per language) and report.html here.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False),
              help="Write {repository, cut, n_fit, n_test, promoted, version, results} here.")
@click.option("--from-scratch", is_flag=True,
              help="Train a new ranker on the fit records alone instead of fine-tuning the serving one.")
@click.pass_context
def adapt_cmd(ctx, repo, home, repository, until, holdout_months, rev, mutations, max_commits, languages,
              feedback_db, seed_data, base_model, metric, min_gain, dev_fraction, epochs, seed, report_dir,
              json_out, from_scratch):
    """Train REPO's own model from its history and promote it only if it wins, forward in time.

    REPO (work tree, bare repository or clone URL) is mined for real fixes and mutations of its
    clean code; records up to the cut train a new version of the home (the serving version's SAE,
    its ranker fine-tuned on them, a new calibration); the fixes after the cut judge the serving version, the new one
    and `length` (longest line first). The new version serves only if it beats the serving one by
    --min-gain on --metric; otherwise it is kept as "refused". The table prints either way; exit
    code 0 either way. `ptbot model list|rollback --home HOME` shows and undoes promotions.

    \b
      ptbot adapt ../shop --repository octo/shop --report adapt-report/ --json adapt.json
      ptbot adapt ../shop --home homes/shop --until 2024-01-01 --feedback-db $PTBOT_DATABASE_URL
    """
    from analyzer.artifact import ArtifactError
    from bot.eval_report import render_table
    from lab.adapt import AdaptConfig
    from lab.records import RecordError
    from miners.history import GitError
    from miners.mine import MiningError
    from workers.adapt import AdaptBusy, AdaptJob, adapt_repository, write_outputs

    settings = _settings(ctx)
    if not home:
        if not (repository and settings.model_homes):
            raise _fail("give --home, or --repository with PTBOT_MODEL_HOMES set (homes live in "
                        "PTBOT_MODEL_HOMES/OWNER/NAME, where the App and the Action look for them)")
        from analyzer.versions import repository_home

        try:
            home = str(repository_home(Path(settings.model_homes).expanduser(), repository))
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="--repository") from None
    try:
        cfg = AdaptConfig(min_gain=min_gain, metric=metric, seed=seed, dev_fraction=dev_fraction,
                          ranker={"epochs": epochs} if epochs else {}, fine_tune=not from_scratch)
        job = AdaptJob(repo=repo, home=Path(home), repository=repository or "", until=until,
                       holdout_months=holdout_months, rev=rev, mutations=mutations, max_commits=max_commits,
                       languages=tuple(_comma_list(languages) or ()), feedback_db=feedback_db,
                       seed_data=tuple(Path(p) for p in seed_data), base_model=base_model, config=cfg)
        result = adapt_repository(job, settings, progress=True)
    except (AdaptBusy, ArtifactError, GitError, RecordError, MiningError, ValueError) as e:
        raise _fail(str(e)) from e
    click.echo(render_table(result.report_doc()), nl=False)
    for path in write_outputs(result, json_out=json_out, report_dir=report_dir):
        click.echo(f"wrote {path}", err=True)
    verdict = "PROMOTED" if result.promoted else "REFUSED"
    again = " (already adapted on these inputs; nothing trained)" if result.reused else ""
    click.echo(f"{verdict} version {result.version} for {result.repository} (serving now: "
               f"{result.version if result.promoted else result.serving}){again}; {result.reason}")


@cli.group("model")
def model_group() -> None:
    """Versions of a model home: list them, roll back, start a home from a model directory.

    Point PTBOT_MODEL (or --model) at the home: the scorer loads its serving version.
    """


@model_group.command("init")
@click.option("--home", required=True, type=click.Path(file_okay=False), help="Model home to create.")
@click.option("--from", "from_dir", required=True, type=click.Path(file_okay=False, exists=True),
              help="Model directory (made by pretrain + bind) that becomes version 0001.")
def model_init(home, from_dir):
    """Create a model home whose version 0001 is a copy of a model directory."""
    from analyzer import versions
    from analyzer.artifact import ArtifactError

    try:
        versions.init_home(Path(home), Path(from_dir))
    except ArtifactError as e:
        raise _fail(str(e)) from e
    click.echo(f"created {home}: serving 0001 (copy of {from_dir})")


@model_group.command("list")
@click.option("--home", required=True, type=click.Path(file_okay=False, exists=True), help="Model home.")
def model_list(home):
    """Every version with its status and the gate's metrics (old -> new)."""
    from analyzer import versions
    from analyzer.artifact import ArtifactError

    try:
        rows = versions.list_versions(Path(home))
    except ArtifactError as e:
        raise _fail(str(e)) from e
    for v in rows:
        gate = ""
        if v.gate:
            m = v.gate["config"]["metric"]
            old = (v.gate.get("old") or {}).get(m)
            new = (v.gate.get("new") or {}).get(m)
            gate = f"  gate {m}: {'n/a' if old is None else f'{old:.3f}'} -> {'n/a' if new is None else f'{new:.3f}'}"
        click.echo(f"{v.version}  {v.status:9s}  {v.created}{gate}")


@model_group.command("rollback")
@click.option("--home", required=True, type=click.Path(file_okay=False, exists=True), help="Model home.")
def model_rollback(home):
    """Serve the previously promoted version again (restart workers to pick it up)."""
    from analyzer import versions
    from analyzer.artifact import ArtifactError

    try:
        version = versions.rollback(Path(home))
    except ArtifactError as e:
        raise _fail(str(e)) from e
    click.echo(f"serving {version}")


# ---------------------------------------------------------------- scale-out: queue + shards


def _mine_on_queue(configs, resume: bool, range_commits: int):
    """``mine-repo --queue``: ranges on the cpu queue, merged into --out here."""
    from workers.producer import make_producer
    from workers.scaleout import ScaleOutError, mine_on_queue

    click.echo(f"mining {len(configs)} repositor{'y' if len(configs) == 1 else 'ies'} on the cpu queue "
               "(workers: `ptbot worker --queues cpu --training-only`)", err=True)
    try:
        return mine_on_queue(make_producer(_settings(click.get_current_context())), configs,
                             range_commits=range_commits, resume=resume)
    except ScaleOutError as e:
        raise _fail(str(e)) from e


def _pretrain_from_shards(ctx: click.Context, data, shards_dir: str, out_dir: str, sae: dict, name, seed):
    """``pretrain --shards``: stage 1 on line states from ``ptbot extract``."""
    from click.core import ParameterSource

    from analyzer.artifact import ArtifactError
    from analyzer.supervisor import supervisor_ref
    from lab.shards import ShardError, read_manifest
    from lab.train import pretrain_from_shards

    if data:
        raise _fail("give DATA or --shards, not both (the shards already fix the records)")
    fixed = [f"--{n.replace('_', '-')}" for n in ("languages", "mutations", "fine_mutations", "dev_fraction",
                                                  "max_records")
             if ctx.get_parameter_source(n) not in (ParameterSource.DEFAULT, None)]
    try:
        manifest = read_manifest(Path(shards_dir))
    except ShardError as e:
        raise _fail(str(e)) from e
    if fixed:
        raise _fail(f"{', '.join(fixed)}: fixed when the shards were extracted ({manifest['selection']}); "
                    "run `ptbot extract` again to change them")
    expect = None
    # An explicit --supervisor/--layer is checked against the shards; by default they name theirs.
    if any(ctx.get_parameter_source(n) not in (ParameterSource.DEFAULT, None) for n in ("supervisor", "layer")):
        params = ctx.params
        sup = _load_supervisor(_settings(ctx), params["supervisor"], params["layer"])
        expect = supervisor_ref(sup)
    try:
        result = pretrain_from_shards(Path(shards_dir), Path(out_dir), expect=expect, sae_cfg=sae, seed=seed,
                                      name=name)
    except (ShardError, ArtifactError, ValueError) as e:
        raise _fail(str(e)) from e
    t = result["sae_training"]
    click.echo(f"SAE trained on {t['lines']:,} lines ({t['pairs']:,} pairs) from {shards_dir}: "
               f"fvu {t.get('fvu', float('nan')):.3f}, dead {t.get('dead_fraction', 0):.1%}; "
               f"wrote {out_dir}", err=True)


@cli.command("extract")
@click.argument("data", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Directory for manifest.json, plan/ and shard-NNNNN.safetensors (rerun to resume).")
@_reading_options
@click.option("--seed", default=0, show_default=True, help="Seed of the mutations, split and subset.")
@click.option("--shard-size", default=4096, show_default=True, type=click.IntRange(min=1),
              help="Texts per shard (one gpu task each with --queue: keep it under the worker's time "
                   "limit, 300 s by default). A multiple of 64 reads in the very batches pretrain uses.")
@click.option("--dtype", type=click.Choice(["float32", "float16"]), default="float32", show_default=True,
              help="Stored precision of the states (float16: half the disk, pretrain no longer bit-equal).")
@click.option("--queue", is_flag=True,
              help="Read the shards on Celery workers (gpu queue, Redis at PTBOT_REDIS_URL); workers must "
                   "see --out at the same path and be able to load the supervisor.")
@click.pass_context
def extract_cmd(ctx, data, out_dir, supervisor, layer, languages, mutations, fine_mutations, dev_fraction,
                max_records, seed, shard_size, dtype, queue):
    """Compute the line states `ptbot pretrain` would read from DATA, into safetensors shards.

    The texts are those pretrain makes (records minus bind's dev problems, fixed + buggy versions,
    MUTATIONS mutated copies); every scorable line's state at the supervisor's layer is stored with
    its text, line, record, wrong-line label and the contrastive pairs. Then:

    \b
      ptbot extract data/*.jsonl --out states/ --queue     (gpu workers: ptbot worker --queues gpu --training-only)
      ptbot pretrain --shards states/ --out my-model
    """
    from tqdm import tqdm

    from analyzer.supervisor import supervisor_ref
    from lab.shards import ExtractSettings, ShardError, extract_shard, finish, pending_shards
    from lab.train import plan_line_states

    langs = _comma_list(languages)
    recs = _records(data, langs)
    sup = _load_supervisor(_settings(ctx), supervisor, layer)
    out = Path(out_dir)
    try:
        manifest = plan_line_states(recs, out, supervisor_ref(sup), mutations=mutations,
                                    fine_mutations=fine_mutations, seed=seed, holdout=dev_fraction or None,
                                    max_records=max_records, sources=[Path(p) for p in data],
                                    settings=ExtractSettings(shard_size=shard_size, dtype=dtype))
        todo = pending_shards(out)
        click.echo(f"{manifest['counts']['texts']:,} texts of {manifest['counts']['records']:,} records in "
                   f"{len(manifest['shards'])} shard(s), {len(todo)} to read", err=True)
        if queue:
            from workers.producer import make_producer
            from workers.scaleout import ScaleOutError, extract_on_queue

            try:
                manifest = extract_on_queue(make_producer(_settings(ctx)), out)
            except ScaleOutError as e:
                raise _fail(str(e)) from e
        else:
            cache = _state_cache(ctx, sup)
            for i in tqdm(todo, desc="shards", unit="shard", file=sys.stderr, disable=not todo):
                extract_shard(sup, out, i, cache=cache, progress=True)
            manifest = finish(out)
    except (ShardError, ValueError) as e:
        raise _fail(str(e)) from e
    click.echo(json.dumps({k: manifest[k] for k in ("complete", "counts", "supervisor", "dtype")}, indent=2))


def main() -> None:  # pragma: no cover - console entry point alias
    cli(prog_name="ptbot")


if __name__ == "__main__":  # pragma: no cover
    main()

"""The ``nuner`` command line.

``nuner run`` runs the ``nuner`` flow in Prefect's ephemeral mode when no Prefect server is
configured (``PREFECT_API_URL`` unset): no server to start by hand.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any, Callable

# Prefect reads these when it is imported; the defaults suit an offline 2-core machine.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # stages report their own progress
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _run(args: argparse.Namespace) -> int:
    from nuner_core.config import ConfigError, load_config, parse_overrides
    from nuner_core.registry import spec
    from nuner_core.stage_api import StageError

    stages = [s.strip() for s in args.stages.split(",") if s.strip()] if args.stages else None
    try:  # fail fast, before Prefect starts (its start-up takes seconds)
        overrides = parse_overrides(args.set)
        if load_config(args.profile, overrides).tag.shards < 2 and args.deployment:
            raise ConfigError("--deployment runs the shards of a sharded tag stage on a pool's workers: set tag.shards > 1 too")
        for name in stages or ():
            spec(name)
        overrides = _hide_url_credentials(overrides)
    except (ConfigError, StageError) as exc:
        _error("nuner", exc)
        return 2
    if args.debug:
        os.environ["NUNER_DEBUG"] = "1"
    from prefect.exceptions import FailedRun

    from flows.pipeline import nuner
    from nuner_core.store import ArtifactError

    try:
        summary = nuner(profile=args.profile, overrides=overrides, stages=stages, deployment=args.deployment)
    except (StageError, ConfigError, ArtifactError, FailedRun) as exc:
        _error("nuner", exc)
        return 1
    assert isinstance(summary, dict)  # a flow that ends in a Failed state raises FailedRun when called
    width = max(map(len, summary), default=0)
    for stage, info in summary.items():
        print(f"{stage:<{width}}  {info['state']:<9}  {info['path']}")
    if args.json:
        print(json.dumps(summary))
    return 0


def _hide_url_credentials(overrides: dict[str, Any]) -> dict[str, Any]:
    """Flow parameters are stored in Prefect's database: every URL in the overrides goes there redacted,
    and an LLM's base_url (annotate's, evaluate.llms') reaches the flow (in this process) through the
    environment; credentials anywhere else are refused (``ConfigError``)."""
    from nuner_core.annotation.config import endpoint_urls, hand_over
    from nuner_core.config import ConfigError
    from nuner_core.redaction import credentialed_urls, redact_values

    try:
        hand_over(endpoint_urls(credentialed_urls(overrides)))
    except ValueError as exc:
        raise ConfigError(f"--set {exc}") from None
    redacted: dict[str, Any] = redact_values(overrides)
    return redacted


def _error(command: str, exc: BaseException | str) -> None:
    """One line (or a few) on standard error: URL credentials masked, length capped."""
    from nuner_core.redaction import safe_message

    print(safe_message(f"{command}: {exc}"), file=sys.stderr)


def _stack(args: argparse.Namespace) -> int:
    from pathlib import Path

    from flows.stack import Stack, StackError

    stack = Stack(Path(args.data_dir) if args.data_dir else None, port=args.port, pool=args.pool)
    try:
        if args.action == "up":
            state = stack.up(deploy=not args.no_deploy)
            print(f"\nUI: {state.url}\nrun: prefect deployment run nuner/full-pipeline")
            return 0
        if args.action == "down":
            stack.down()
            return 0
        return 0 if stack.status()["running"] else 1
    except StackError as exc:
        print(f"nuner stack: {exc}", file=sys.stderr)
        return 1


def _experiment(args: argparse.Namespace) -> int:
    from nuner_core.config import ConfigError
    from nuner_core.experiment.spec import ExperimentError, load_experiment
    from nuner_core.stage_api import StageError

    try:  # fail fast, before Prefect starts: the file, every point's config, the report, its credentials
        load_experiment(args.file, args.max_points).endpoints(args.deployment)
    except (ExperimentError, ConfigError) as exc:
        _error("nuner experiment", exc)
        return 2
    if args.debug:
        os.environ["NUNER_DEBUG"] = "1"
    from flows.experiment import experiment

    state = experiment(file=args.file, max_parallel=args.max_parallel, deployment=args.deployment,
                       max_points=args.max_points, return_state=True)
    try:
        summary = state.result(raise_on_failure=False)
    except (StageError, ConfigError) as exc:
        summary = None
        _error("nuner experiment", exc)
    if isinstance(summary, dict) and summary.get("artifact"):
        print(f"experiment artifact: {summary['artifact']}")
        summary_md = os.path.join(summary["artifact"], "summary.md")
        if os.path.isfile(summary_md):
            print(open(summary_md, encoding="utf-8").read())
    if not state.is_completed():
        _error("nuner experiment", state.message or f"ended {state.name}")
        return 1
    return 0


def _cache_import(args: argparse.Namespace) -> int:
    from nuner_core.annotation.cache_import import ImportFileError, import_responses
    from nuner_core.config import ConfigError, load_config
    from nuner_core.stage_api import StageError

    if args.artifact or (args.file and args.file.endswith(".parquet")):  # saved answers, keyed already
        from flows.store import import_saved_answers

        return import_saved_answers(args)
    if not args.file:
        print("nuner cache import: give a file, or --artifact KEY", file=sys.stderr)
        return 2
    try:
        config = load_config(args.profile, args.set).annotate
        stats = import_responses(args.file, model=args.model or config.model, config=config, overwrite=args.overwrite)
    except (ConfigError, StageError) as exc:
        print(f"nuner cache import: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ImportFileError) else 1
    print(json.dumps(stats.as_dict(), indent=2))
    return 0


SKIP_BAD_HINT = " (--skip-bad skips such lines, counted)"
SUMMARY_LABELS = 10  # labels named in `nuner tag`'s summary line; the rest are counted


def _tag(args: argparse.Namespace) -> int:
    """Zero-shot tagging with a two-encoder model, straight from the library (no Prefect)."""
    import shutil
    import tempfile
    from pathlib import Path

    from nuner_core.progress_bar import BarProgress
    from nuner_core.stage_api import StageError
    from nuner_core.tagging import check_model_dir, check_threshold, iter_files, parse_labels, read_label_file
    from nuner_core.tagging.documents import DocumentError, ReadStats
    from nuner_core.tagging.labels import label_thresholds, parse_threshold_option

    read = ReadStats()
    try:  # everything checkable without loading a model, first: the input is read (not tagged) once here
        labels = read_label_file(args.labels_file) if args.labels_file else parse_labels(args.labels or "")
        threshold, per_label = parse_threshold_option(args.threshold) if args.threshold is not None else (None, {})
        if threshold is not None:
            check_threshold(threshold)
        label_thresholds(labels, 0.5, per_label)  # each names a label
        model = _tag_model(args.model)
        check_model_dir(model)
        files = _existing_files(args.files)
        total, documents = iter_files(files, args.format, args.text_field, skip_bad=args.skip_bad, stats=read)
    except (StageError, ValueError) as exc:
        print(f"nuner tag: {exc}{SKIP_BAD_HINT if isinstance(exc, DocumentError) else ''}", file=sys.stderr)
        return 2
    from nuner_core.tagging import ZeroShotTagger, tag_documents

    try:
        tagger = ZeroShotTagger.from_pretrained(model, device=args.device, backend=args.backend)
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(args.output) if args.output != "-" else Path(tmp) / "entities.jsonl"
            summary = tag_documents(tagger, documents, labels, threshold, out, BarProgress("tag"), total=total,
                                    thresholds=per_label, decoding=args.decoding)  # fmt: skip
            if args.output == "-":
                with out.open(encoding="utf-8") as fh:
                    shutil.copyfileobj(fh, sys.stdout)
    except StageError as exc:
        print(f"nuner tag: {exc}", file=sys.stderr)
        return 1
    shown = list(summary.per_label.items())[:SUMMARY_LABELS]
    counts = ", ".join(f"{label} {n:,}" for label, n in shown)
    if len(summary.per_label) > len(shown):
        counts += f", and {len(summary.per_label) - len(shown):,} more labels"
    own = "".join(f", {label} {x:g}" for label, x in summary.thresholds.items())
    print(f"nuner tag: {summary.documents:,} documents, {summary.entities:,} entities ({counts}) at threshold "
          f"{summary.threshold:g}{own}, {summary.decoding} decoding, in {summary.seconds:.1f} s{_skipped(read)}", file=sys.stderr)
    return 0


def _tag_model(source: str) -> str:
    """``--model``: a directory, or a pretrain artifact of the store (``pretrain:latest``, ``pretrain:<key>``), fetched
    as ``nuner serve --model`` fetches it."""
    if not source.startswith("pretrain:"):
        return source
    from nuner_core.serving.models import resolve_source

    return str(resolve_source(source))


def _existing_files(names: list[str]) -> list[Any]:
    from pathlib import Path

    from nuner_core.stage_api import StageError

    missing = [name for name in names if not Path(name).is_file()]
    if missing:
        raise StageError(f"no such input file: {', '.join(missing)}")
    return [Path(name) for name in names]


def _skipped(read: Any) -> str:
    """The bad lines --skip-bad left out, and the first of them."""
    return f"; {read.bad_lines:,} bad line(s) skipped, the first: {read.first_bad}" if read.bad_lines else ""


def _predict(args: argparse.Namespace) -> int:
    """Tag text with a fine-tuned token classifier (the finetune stage's model/)."""
    from pathlib import Path

    from nuner_core.finetuning.predict import predict_files
    from nuner_core.stage_api import StageError
    from nuner_core.tagging.documents import DocumentError, ReadStats, iter_files

    read = ReadStats()
    try:  # everything checkable without loading the model, first: the input is read (not tagged) once here
        if args.batch_size < 1:
            raise StageError(f"--batch-size must be a positive number of windows, not {args.batch_size}")
        files = _existing_files(args.files)
        if not (Path(args.model) / "config.json").is_file():
            raise StageError(f"{args.model} is not a model directory (no config.json)")
        iter_files(files, skip_bad=args.skip_bad, stats=read)
    except StageError as exc:
        print(f"nuner predict: {exc}{SKIP_BAD_HINT if isinstance(exc, DocumentError) else ''}", file=sys.stderr)
        return 2
    try:
        counts = predict_files(args.model, args.files, sys.stdout if args.output == "-" else args.output,
                               device=args.device, batch_size=args.batch_size, skip_bad=args.skip_bad)
    except StageError as exc:
        print(f"nuner predict: {exc}", file=sys.stderr)
        return 1
    print(f"nuner predict: {json.dumps(counts)}{_skipped(read)}", file=sys.stderr)
    return 0


def _export_model(args: argparse.Namespace) -> int:
    """A self-contained zero-shot model directory (both encoders, settings, model card) from a pretrain run."""
    from nuner_core.stage_api import StageError
    from nuner_core.tagging import export_model

    try:
        dest = export_model(args.source, args.dest, threshold=args.threshold, overwrite=args.overwrite, onnx=args.onnx or args.int8, int8=args.int8)
    except (StageError, FileExistsError, ValueError) as exc:
        print(f"nuner export-model: {exc}", file=sys.stderr)
        return 1
    print(dest)
    return 0


def _serve(args: argparse.Namespace) -> int:
    """The trained models behind HTTP (``nuner_core.serving``): blocks until SIGINT/SIGTERM."""
    from nuner_core.serving.limits import Limits
    from nuner_core.serving.server import ServeOptions, parse_models, serve
    from nuner_core.stage_api import StageError

    try:  # everything checkable without loading weights, first
        limits = Limits(args.max_body_bytes, args.max_texts, args.max_chars, args.max_labels, args.timeout)
        if min(args.workers, args.max_batch_tokens, args.label_cache_size, args.threads or 1) < 1 or args.max_wait_ms < 0:
            raise ValueError("--workers, --threads, --max-batch-tokens and --label-cache-size must be positive, --max-wait-ms not negative")
        warm = tuple(label.strip() for label in args.warm_labels.split(",") if label.strip())
        options = ServeOptions(parse_models(args.model), args.backend, args.device, limits, args.max_batch_tokens, args.max_wait_ms,
                               args.label_cache_size, warm, args.threads)  # fmt: skip
    except (StageError, ValueError) as exc:
        _error("nuner serve", exc)
        return 2
    try:
        serve(options, args.host, args.port, args.workers, args.log_level)
    except StageError as exc:
        _error("nuner serve", exc)
        return 1
    return 0


def _add_serve_parser(sub: Any) -> None:
    from nuner_core.serving.limits import Limits

    defaults = Limits()
    serve = sub.add_parser("serve", help="serve zero-shot and fine-tuned models over HTTP (POST /v1/tag, /v1/predict; /docs)")
    serve.add_argument("--model", action="append", default=[], required=True, metavar="NAME=SOURCE",
                       help="a model directory (pretrain run, export-model copy, finetune model/) or a store artifact "
                            "(pretrain:latest, finetune:<key>); repeatable")  # fmt: skip
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--workers", type=int, default=1, help="processes, each with its own copy of the models")
    serve.add_argument("--backend", choices=["torch", "onnx", "onnx-int8"], default="torch", help="for zero-shot models, as `nuner tag`")
    serve.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, cuda:1")
    serve.add_argument("--threads", type=int, help="CPU threads of the encoders, per worker (default: the library's)")
    serve.add_argument("--max-body-bytes", type=int, default=defaults.max_body_bytes, help="larger bodies get 413")
    serve.add_argument("--max-texts", type=int, default=defaults.max_texts, help="texts per request (more: 422)")
    serve.add_argument("--max-chars", type=int, default=defaults.max_chars, help="characters per text (more: 422)")
    serve.add_argument("--max-labels", type=int, default=defaults.max_labels, help="labels per request (more: 422)")
    serve.add_argument("--timeout", type=float, default=defaults.timeout_s, help="seconds before a request gets 503 + Retry-After")
    serve.add_argument("--max-batch-tokens", type=int, default=8192, help="estimated tokens merged into one tagger call")
    serve.add_argument("--max-wait-ms", type=float, default=5.0, help="how long a request waits for others to join its batch")
    serve.add_argument("--label-cache-size", type=int, default=100_000, help="label vectors kept per model (LRU)")
    serve.add_argument("--warm-labels", default="person, organization, location, date",
                       help="labels embedded at start-up, before /readyz says ready (comma-separated; empty: none)")
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default="info",
                       help="uvicorn's; warning and above drop the line per request")  # fmt: skip
    serve.set_defaults(func=_serve)


# The docs page (under docs/) of each command, named at the end of its --help; a nested command has its parent's.
DOCS_PAGES = {
    "run": "getting-started.md",
    "stack": "guides/deployments-and-storage.md",
    "store": "guides/deployments-and-storage.md",
    "experiment": "guides/experiments.md",
    "tag": "guides/tagging.md",
    "export-model": "guides/tagging.md",
    "predict": "guides/fine-tuning.md",
    "cache": "stages/annotate.md",
    "serve": "guides/serving.md",
}
READ_DOCS = "read the site locally with `.venv/bin/mkdocs serve` (http://127.0.0.1:8000)"


def _link_docs(parser: argparse.ArgumentParser) -> None:
    """Every command's --help ends with its docs page, and `nuner --help` with the home page and the CLI reference."""
    parser.epilog = f"docs: docs/index.md; every command and flag: docs/reference/cli.md; {READ_DOCS}"
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                page = f"docs/{DOCS_PAGES[name]}"
                for command in [sub, *_nested(sub)]:
                    command.epilog = f"docs: {page}; {READ_DOCS}"


def _nested(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    return [sub for a in parser._actions if isinstance(a, argparse._SubParsersAction) for sub in a.choices.values()]


def build_parser() -> argparse.ArgumentParser:
    from nuner_core.tagging.decode import DECODINGS, DEFAULT_DECODING  # numpy only: the parser stays quick to build

    parser = argparse.ArgumentParser(prog="nuner", description="Build task-specific NER foundation models (NuNER).")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the pipeline (or some stages) on a profile")
    run.add_argument("--profile", default="demo", help="a shipped profile (demo, paper) or a YAML file")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. pretrain.lr=1e-4")
    run.add_argument("--stages", help="comma-separated subset, e.g. evaluate or dataset,pretrain")
    run.add_argument("--deployment", help="with tag.shards > 1: each shard a run of this deployment (e.g. nuner/tag) on its workers")
    run.add_argument("--json", action="store_true", help="also print the summary as JSON")
    run.add_argument("--debug", action="store_true", help="tracebacks for expected errors too (bad input, budget stops)")
    run.set_defaults(func=_run)

    stack = sub.add_parser("stack", help="a local Prefect server, work pool, deployments and worker (up, down, status)")
    stack.add_argument("action", choices=["up", "down", "status"])
    stack.add_argument("--port", type=int, default=4200, help="server port on 127.0.0.1 (default 4200)")
    stack.add_argument("--pool", default="nuner-process", help="process work pool name (default nuner-process)")
    stack.add_argument("--data-dir", help="artifact root holding stack/ (default $NUNER_DATA_DIR or ./data)")
    stack.add_argument("--no-deploy", action="store_true", help="up: skip `prefect deploy --all`")
    stack.set_defaults(func=_stack)

    exp = sub.add_parser("experiment", help="run an experiment file: a sweep of overrides, collated into a table and a figure")
    exp.add_argument("file", help="the experiment YAML file, e.g. experiments/demo/concept_diversity.yaml")
    exp.add_argument("--max-parallel", type=int, help="points at once (default: the file's, else 1 without a GPU)")
    exp.add_argument("--deployment", help="run each point as a run of this deployment (e.g. nuner/full-pipeline) on its workers")
    exp.add_argument("--max-points", type=int, help="refuse a file of more points than this (default 1000)")
    exp.add_argument("--debug", action="store_true", help="tracebacks for expected errors too")
    exp.set_defaults(func=_experiment)

    tag = sub.add_parser("tag", help="zero-shot NER: tag text with any label names, using a two-encoder model")
    tag.add_argument("files", nargs="+", metavar="FILE", help="plain text (a document per line) or JSON lines (.jsonl, .gz too)")
    tag.add_argument("--model", required=True, help="a pretrain artifact (or its controls/<name>), an exported model, or a store artifact: "
                     "pretrain:latest (the newest pretrain artifact of $NUNER_DATA_DIR), pretrain:<key>")
    tag.add_argument("--labels", help='comma-separated label names, e.g. "person, dish, price"')
    tag.add_argument("--labels-file", help="a file with one label name per line (thousands work)")
    tag.add_argument("--threshold", help="p(word is the label) needed: 0.05, per label person=0.1,date=0.03, or both "
                     "(0.05,person=0.1); default: the model's calibrated one")
    tag.add_argument("--decoding", choices=DECODINGS, default=DEFAULT_DECODING,
                     help="words: each word its best label, same-label neighbours merged; spans: a run of tagged words is one entity")
    tag.add_argument("--output", "-o", default="-", help="JSON lines out (default: standard output)")
    tag.add_argument("--format", choices=["auto", "jsonl", "text"], default="auto", help="input format (auto: by the file name)")
    tag.add_argument("--text-field", default="text", help="the JSON lines field holding the text")
    tag.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, cuda:1")
    tag.add_argument("--skip-bad", action="store_true", help="skip (and count) input lines that are not a readable document")
    tag.add_argument("--backend", choices=["torch", "onnx", "onnx-int8"], default="torch",
                     help="torch, or the ONNX encoders of `export-model --onnx [--int8]` on onnxruntime (CPU)")  # fmt: skip
    tag.set_defaults(func=_tag)

    predict = sub.add_parser("predict", help="tag text with a fine-tuned token classifier (the finetune stage's model/)")
    predict.add_argument("files", nargs="+", metavar="FILE", help="plain text (a document per line) or JSON lines")
    predict.add_argument("--model", required=True, help="a finetune artifact's model/ (or base_model/) directory")
    predict.add_argument("--output", "-o", default="-", help="JSON lines out (default: standard output)")
    predict.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, cuda:1")
    predict.add_argument("--batch-size", type=int, default=32, help="windows per forward pass")
    predict.add_argument("--skip-bad", action="store_true", help="skip (and count) input lines that are not a readable document")
    predict.set_defaults(func=_predict)

    export = sub.add_parser("export-model", help="copy a zero-shot model (both encoders, settings, model card) to hand on")
    export.add_argument("source", help="a pretrain artifact or one of its controls/<name> directories")
    export.add_argument("dest", help="the new model directory")
    export.add_argument("--threshold", type=float, help="store this threshold instead of the calibrated one")
    export.add_argument("--overwrite", action="store_true", help="replace dest if it exists")
    export.add_argument("--onnx", action="store_true", help="also write both encoders as ONNX (for `nuner tag --backend onnx`)")
    export.add_argument("--int8", action="store_true", help="also an int8 (dynamically quantised) ONNX text encoder; implies --onnx")
    export.set_defaults(func=_export_model)

    cache = sub.add_parser("cache", help="the LLM response cache")
    cache_sub = cache.add_subparsers(dest="cache_command", required=True)
    imp = cache_sub.add_parser("import", help="load recorded {text, response} JSON lines into the response cache")
    imp.add_argument("file", nargs="?", help="JSON lines with `text` and `response` fields, or a response-cache.parquet")
    imp.add_argument("--model", help="the model name the answers are recorded for (default: the profile's annotate.model)")
    imp.add_argument("--profile", default="demo", help="profile whose prompt and sampling settings key the cache")
    imp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. annotate.temperature=0")
    imp.add_argument("--overwrite", action="store_true", help="replace answers already in the cache")
    imp.set_defaults(func=_cache_import)
    imp.add_argument("--artifact", metavar="KEY", help="instead of a file: the answers saved with this annotate artifact (fetched from the store)")

    _add_serve_parser(sub)

    from flows.store import add_parser as add_store_parser  # nuner store ls|du|gc: flows/store.py

    add_store_parser(sub)
    _link_docs(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    for name in ("nuner", "nuner_core"):
        logging.getLogger(name).setLevel(logging.INFO)
    args = build_parser().parse_args(argv)
    if args.func not in (_run, _experiment):  # in a flow run, Prefect's console handler prints our loggers
        logging.basicConfig(format="%(asctime)s %(name)s %(levelname)s %(message)s")
    command: Callable[[argparse.Namespace], int] = args.func  # every subcommand sets func (argparse's attributes are untyped)
    return command(args)


if __name__ == "__main__":
    sys.exit(main())

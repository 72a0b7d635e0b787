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
        load_config(args.profile, overrides)
        for name in stages or ():
            spec(name)
    except (ConfigError, StageError) as exc:
        print(f"nuner: {exc}", file=sys.stderr)
        return 2
    if args.debug:
        os.environ["NUNER_DEBUG"] = "1"
    from prefect.exceptions import FailedRun

    from nuner_core.artifacts import ArtifactError

    from flows.pipeline import nuner

    try:
        summary = nuner(profile=args.profile, overrides=overrides, stages=stages)
    except (StageError, ConfigError, ArtifactError, FailedRun) as exc:
        print(f"nuner: {exc}", file=sys.stderr)
        return 1
    width = max(map(len, summary), default=0)
    for stage, info in summary.items():
        print(f"{stage:<{width}}  {info['state']:<9}  {info['path']}")
    if args.json:
        print(json.dumps(summary))
    return 0


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

    try:  # fail fast, before Prefect starts: the file, every point's config, the report
        load_experiment(args.file)
    except (ExperimentError, ConfigError) as exc:
        print(f"nuner experiment: {exc}", file=sys.stderr)
        return 2
    if args.debug:
        os.environ["NUNER_DEBUG"] = "1"
    from flows.experiment import experiment

    state = experiment(file=args.file, max_parallel=args.max_parallel, deployment=args.deployment, return_state=True)
    try:
        summary = state.result(raise_on_failure=False)
    except (StageError, ConfigError) as exc:
        summary = None
        print(f"nuner experiment: {exc}", file=sys.stderr)
    if isinstance(summary, dict) and summary.get("artifact"):
        print(f"experiment artifact: {summary['artifact']}")
        summary_md = os.path.join(summary["artifact"], "summary.md")
        if os.path.isfile(summary_md):
            print(open(summary_md, encoding="utf-8").read())
    if not state.is_completed():
        print(f"nuner experiment: {state.message}", file=sys.stderr)
        return 1
    return 0


def _cache_import(args: argparse.Namespace) -> int:
    from nuner_core.annotation.cache_import import import_responses
    from nuner_core.config import ConfigError, load_config
    from nuner_core.stage_api import StageError

    try:
        config = load_config(args.profile, args.set).annotate
        stats = import_responses(args.file, model=args.model or config.model, config=config, overwrite=args.overwrite)
    except (ConfigError, StageError) as exc:
        print(f"nuner cache import: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(stats.as_dict(), indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nuner", description="Build task-specific NER foundation models (NuNER).")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the pipeline (or some stages) on a profile")
    run.add_argument("--profile", default="demo", help="a shipped profile (demo, paper) or a YAML file")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. pretrain.lr=1e-4")
    run.add_argument("--stages", help="comma-separated subset, e.g. evaluate or dataset,pretrain")
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
    exp.add_argument("--debug", action="store_true", help="tracebacks for expected errors too")
    exp.set_defaults(func=_experiment)

    cache = sub.add_parser("cache", help="the LLM response cache")
    cache_sub = cache.add_subparsers(dest="cache_command", required=True)
    imp = cache_sub.add_parser("import", help="load recorded {text, response} JSON lines into the response cache")
    imp.add_argument("file", help="JSON lines with `text` and `response` fields")
    imp.add_argument("--model", help="the model name the answers are recorded for (default: the profile's annotate.model)")
    imp.add_argument("--profile", default="demo", help="profile whose prompt and sampling settings key the cache")
    imp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. annotate.temperature=0")
    imp.add_argument("--overwrite", action="store_true", help="replace answers already in the cache")
    imp.set_defaults(func=_cache_import)
    return parser


def main(argv: list[str] | None = None) -> int:
    for name in ("nuner", "nuner_core"):
        logging.getLogger(name).setLevel(logging.INFO)
    args = build_parser().parse_args(argv)
    if args.func not in (_run, _experiment):  # in a flow run, Prefect's console handler prints our loggers
        logging.basicConfig(format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

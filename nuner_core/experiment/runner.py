"""Running an experiment without Prefect's help: what each point needs, what is shared, the artifact.

The Prefect flow (``flows/experiment.py``) runs the points; everything it decides is here:

- ``point_keys``: the artifact key of every stage of a point (the planner's, from its config);
- ``done_points``: points whose reported stage's artifact (``report.stage``: evaluate, or finetune)
  is already in the store (a rerun skips them);
- ``shared_stages``: stages that two or more points to run need and that are not built yet,
  grouped by the first point that needs them, so that concurrent points do not build the
  same artifact twice (a concept sweep annotates once, then pre-trains per point);
- ``publish``: the ``experiment`` artifact (results.parquet, summary.md, the figure, the
  experiment file and the points), keyed on the experiment's content and its points'
  reported-stage keys; published *incomplete* when a point failed, so a rerun finishes it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Sequence

from nuner_core.config import load_config
from nuner_core.experiment.collate import PointOutcome, collate, reported_scores
from nuner_core.experiment.figure import plot
from nuner_core.experiment.finetune_report import write_finetune_summary
from nuner_core.experiment.spec import Experiment, Point
from nuner_core.experiment.summary import write_summary
from nuner_core.pipeline import plan
from nuner_core.registry import STAGE_NAMES
from nuner_core.stage_api import Report
from nuner_core.store import INCOMPLETE, ArtifactRef, ArtifactStore, artifact_key

STAGE = "experiment"  # the artifact store's directory for experiment artifacts
CODE_VERSION = "1"
RESULTS = "results.parquet"
SUMMARY = "summary.md"


def point_keys(experiment: Experiment, point: Point, store: ArtifactStore) -> dict[str, str]:
    """Stage -> the artifact key this point's full pipeline run builds or reuses."""
    config = load_config(experiment.profile, point.overrides, overrides_source=f"point {point.index}:")
    return {step.stage: step.key for step in plan(config, None, store)}


def done_points(keys: dict[int, dict[str, str]], store: ArtifactStore, stage: str = "evaluate") -> set[int]:
    """Points whose ``stage`` artifact (the reported one) is in the store and final: nothing of theirs needs running."""
    return {i for i, k in keys.items() if stage in k and store.is_final(stage, k[stage])}


@dataclass(frozen=True)
class SharedBuild:
    """Stages to build once, before the points run concurrently, with the overrides of ``point``."""

    point: Point
    stages: tuple[str, ...]  # in pipeline order; their own upstream is either in here or already built
    shared_by: tuple[int, ...]  # the points that need them


def shared_stages(points: Sequence[Point], keys: dict[int, dict[str, str]], store: ArtifactStore) -> list[SharedBuild]:
    """Artifacts that at least two of ``points`` need and the store lacks, grouped by the first point needing each.

    A shared artifact's upstream is shared too (a key hashes its inputs' keys), so each group
    is a prefix of its point's pipeline that the earlier groups have completed.
    """
    users: dict[tuple[str, str], list[int]] = {}
    for p in points:
        for stage, key in keys[p.index].items():
            users.setdefault((stage, key), []).append(p.index)
    shared = {sk: who for sk, who in users.items() if len(who) > 1 and not store.is_final(*sk)}
    builds: list[SharedBuild] = []
    for p in points:
        mine = [s for s in STAGE_NAMES if (s, keys[p.index].get(s)) in shared and shared[(s, keys[p.index][s])][0] == p.index]
        if mine:
            who = sorted({i for s in mine for i in shared[(s, keys[p.index][s])]})
            builds.append(SharedBuild(p, tuple(mine), tuple(who)))
    return builds


def reported_keys(experiment: Experiment, keys: dict[int, dict[str, str]]) -> dict[str, str]:
    """``point-<i>`` -> the artifact key of the point's reported stage (what the experiment collates)."""
    stage = experiment.spec.report.stage
    return {f"point-{i}": k.get(stage, "") for i, k in sorted(keys.items())}


def experiment_key(experiment: Experiment, keys: dict[int, dict[str, str]]) -> str:
    return artifact_key(STAGE, CODE_VERSION, {"experiment": experiment.content_hash}, reported_keys(experiment, keys))


def existing(experiment: Experiment, keys: dict[int, dict[str, str]], store: ArtifactStore) -> ArtifactRef | None:
    """The final experiment artifact of exactly these points, if it is there."""
    key = experiment_key(experiment, keys)
    return store.lookup(STAGE, key) if store.is_final(STAGE, key) else None


def default_parallel() -> int:
    """Points at once when the file and the caller do not say: the GPU count, 1 without a GPU."""
    try:
        import torch

        return max(1, torch.cuda.device_count())
    except ImportError:
        return 1


def publish(
    experiment: Experiment,
    outcomes: Sequence[PointOutcome],
    keys: dict[int, dict[str, str]],
    store: ArtifactStore,
    started: float | None = None,
) -> ArtifactRef:
    """Collate the points' results and publish the experiment artifact (incomplete when a point failed)."""
    spec = experiment.spec
    key = experiment_key(experiment, keys)
    failed = [o for o in outcomes if o.status == "failed"]
    manifest: dict[str, Any] = {
        "stage": STAGE,
        "key": key,
        "title": f"experiment · {spec.name} · {len(outcomes)} points",
        "profile": spec.profile,
        "config": spec.model_dump(mode="json"),
        "source": experiment.source,
        "upstream": reported_keys(experiment, keys),
        "code_version": CODE_VERSION,
    }
    stage = spec.report.stage
    with store.publish(STAGE, key, manifest) as out:
        table = collate(experiment, outcomes)
        table.write_parquet(out / RESULTS)
        figure: str | None = None
        if stage == "finetune":  # a table of test F1 per point (no figure: the points differ in data set, not along an axis)
            summary, headline = write_finetune_summary(out / SUMMARY, experiment, outcomes, table)
        else:
            scores = reported_scores(experiment, table)
            drawn = f"f1_vs_{spec.x_key.rsplit('.', 1)[-1]}.png"
            figure = drawn if plot(out / drawn, experiment, scores) else None
            summary = write_summary(out / SUMMARY, experiment, outcomes, scores, figure)
            headline = {f"{o.point.label} average F1": round(cell.mean, 2) for o in outcomes
                        if (cell := scores.cells.get((o.point.index, "average"))) is not None}  # fmt: skip
        (out / "experiment.yaml").write_text(_yaml(spec.model_dump(mode="json")))
        (out / "points.json").write_text(json.dumps([o.as_dict() for o in outcomes], indent=2, default=str))
        reports = [Report("markdown", f"experiment-{_slug(spec.name)}", f"Experiment {spec.name}: table, spread, failed points", summary)]
        if figure:
            reports.append(Report("image", f"experiment-{_slug(spec.name)}-figure", f"Experiment {spec.name}: F1 vs {spec.x_key}", figure))
        reports.append(Report("table", f"experiment-{_slug(spec.name)}-points", f"Experiment {spec.name}: points", [
            {"point": o.point.index, "values": o.point.label, "status": o.status, "seconds": round(o.seconds, 1),
             stage: o.keys.get(stage), "message": o.message[:200]} for o in outcomes
        ]))  # fmt: skip
        manifest.update(
            rows={"results": table.height, "points": len(outcomes), "points_failed": len(failed)},
            headline=headline,
            reports=[r.as_dict() for r in reports],
            points=[o.as_dict() for o in outcomes],
            timings={"wall_s": round(time.time() - started, 3)} if started else {},
        )
        if failed:
            manifest[INCOMPLETE] = {
                "failed_points": {str(o.point.index): o.message[:500] for o in failed},
                "why": "a point failed; rerun the experiment to finish it (points with results are not run again)",
            }
    ref = store.lookup(STAGE, key)
    assert ref is not None, f"experiment artifact {key} vanished right after it was published"
    return ref


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")


def _yaml(data: Any) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)

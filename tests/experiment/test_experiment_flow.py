"""The experiment flow under a Prefect test server: shared stages built once, failed points kept
apart, reruns that run only what is missing, the concurrency limit, the UI artifacts."""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID

import polars as pl
import pytest
from experiment_helpers import artifact_counts, experiment_ref, points, write_experiment
from prefect import State
from prefect.artifacts import Artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

from flows.experiment import experiment

pytestmark = pytest.mark.slow


def _intervals(flow_run_ids: list[str]) -> list[tuple]:
    with get_client(sync_client=True) as client:
        runs = [client.read_flow_run(UUID(i)) for i in flow_run_ids]
    return [(r.start_time, r.end_time) for r in runs]


def _point_task_intervals(experiment_run: State) -> list[tuple]:
    """When each ``point`` task of the experiment flow run was Running, from Prefect's records.

    The scheduler's limit is on these tasks. Whether the points' *subflows* then overlap is up to
    Prefect: on a loaded machine, the API call that registers a subflow under its task was seen to
    wait until the other point's subflow had ended (so subflow intervals are not what to assert on).
    """
    flow_run_id = experiment_run.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return [(r.start_time, r.end_time) for r in runs if r.name.startswith("point ")]


def _max_overlap(intervals: list[tuple]) -> int:
    """The most runs in progress at one instant."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals], key=lambda x: (x[0], x[1]))
    live = most = 0
    for _, delta in events:
        live += delta
        most = max(most, live)
    return most


def test_two_points_share_their_upstream_and_run_side_by_side(prefect_harness, data_dir, tmp_path, tiny):
    file = write_experiment(tmp_path / "exp.yaml", tiny, {"pretrain.seed": [0, 1]}, figure={"log_x": False})
    state = experiment(file=str(file), max_parallel=2, return_state=True)
    assert state.is_completed(), state.message

    # Built once each: the stages the two points share; per point: pre-training and evaluation.
    assert artifact_counts(data_dir) == {"corpus": 1, "annotate": 1, "dataset": 1, "pretrain": 2, "evaluate": 2, "experiment": 1}

    ref = experiment_ref(data_dir)
    table = pl.read_parquet(ref.dir / "results.parquet")
    # frozen: a row per point x encoder (nuner, base) x benchmark (1) x k (1) x sampling (2); other protocols kept too
    assert table.filter(pl.col("protocol") == "frozen").height == 2 * 2 * 1 * 1 * 2
    assert sorted(table["pretrain.seed"].unique().to_list()) == [0, 1]
    assert table.filter(pl.col("is_base"))["encoder"].unique().to_list() == ["base"]
    summary = (ref.dir / "summary.md").read_text()
    assert "| point | seed | tiny | average | base (average) | gain vs base |" in summary
    assert "## Spread" in summary and "Failed points" not in summary
    assert (ref.dir / "f1_vs_seed.png").stat().st_size > 10_000
    assert [p["status"] for p in points(ref)] == ["built", "built"]

    # The limit was 2: both points' tasks ran at the same time (each the parent of a nuner subflow of its own).
    intervals = _point_task_intervals(state)
    assert len(intervals) == 2 and _max_overlap(intervals) == 2, intervals

    # The table and the figure in the UI.
    md = Artifact.get("experiment-tiny-sweep")
    assert md is not None and md.type == "markdown" and "gain vs base" in md.data
    fig = Artifact.get("experiment-tiny-sweep-figure")
    assert fig is not None and fig.type == "image" and fig.data.startswith("data:image/png;base64,")

    # Same file again: nothing runs, the artifact comes back Cached.
    again = experiment(file=str(file), return_state=True)
    assert again.is_completed() and again.result()["state"] == "Cached"


def test_a_rerun_adds_only_the_new_point_one_at_a_time(prefect_harness, data_dir, tmp_path, tiny):
    first = write_experiment(tmp_path / "exp.yaml", tiny, {"pretrain.seed": [0, 1]})
    assert experiment(file=str(first), max_parallel=1, return_state=True).is_completed()
    built = points(experiment_ref(data_dir))
    # max_parallel 1: the second point started after the first had ended
    assert _max_overlap(_intervals([p["flow_run"] for p in built])) == 1

    more = write_experiment(tmp_path / "exp.yaml", tiny, {"pretrain.seed": [0, 1, 2]})
    result = experiment(file=str(more), max_parallel=1, return_state=True).result()
    assert result["ran"] == [2] and result["failed"] == []
    assert artifact_counts(data_dir) == {"corpus": 1, "annotate": 1, "dataset": 1, "pretrain": 3, "evaluate": 3, "experiment": 2}
    ref = experiment_ref(data_dir)
    assert [p["status"] for p in points(ref)] == ["reused", "reused", "built"]
    assert pl.read_parquet(ref.dir / "results.parquet")["point"].unique().sort().to_list() == [0, 1, 2]


def test_the_limit_holds_with_more_points_than_slots(prefect_harness, data_dir, tmp_path, tiny):
    file = write_experiment(tmp_path / "exp.yaml", tiny, {"pretrain.seed": [0, 1, 2]}, max_parallel=2)
    state = experiment(file=str(file), return_state=True)
    assert state.is_completed()
    intervals = _point_task_intervals(state)
    assert len(intervals) == 3 and _max_overlap(intervals) == 2, intervals  # never three at once, but two did run together
    assert all(end - start > timedelta(0) for start, end in intervals)


def test_a_failed_point_is_reported_and_the_others_kept(prefect_harness, data_dir, tmp_path, tiny):
    # freeze_layers 5 on a 2-layer model: that point's pre-training stops with a StageError.
    overrides = {k: v for k, v in tiny.items() if k != "pretrain.freeze_layers"}
    file = write_experiment(tmp_path / "exp.yaml", overrides, {"pretrain.freeze_layers": [1, 5]})
    state = experiment(file=str(file), return_state=True)
    assert state.is_failed()
    assert "1 of 2 points failed" in state.message and "freeze_layers=5" in state.message
    assert state.result(raise_on_failure=False)["failed"] == [1]  # what `nuner experiment` prints from

    ref = experiment_ref(data_dir)
    manifest = ref.manifest()
    assert set(manifest["incomplete"]["failed_points"]) == {"1"}  # published, but a rerun finishes it
    assert [p["status"] for p in points(ref)] == ["built", "failed"]
    table = pl.read_parquet(ref.dir / "results.parquet")
    assert table["point"].unique().to_list() == [0]  # the good point's results are all there
    summary = (ref.dir / "summary.md").read_text()
    assert "## Failed points" in summary and "| 1 | freeze_layers=5 |" in summary and "layers" in summary
    assert artifact_counts(data_dir)["evaluate"] == 1

    # A rerun does not run the good point again; the bad one fails again, for the same reason.
    again = experiment(file=str(file), return_state=True)
    assert again.is_failed()
    assert [p["status"] for p in points(experiment_ref(data_dir))] == ["reused", "failed"]

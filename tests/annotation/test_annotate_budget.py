"""The budget is per run, and a budget stop says so, with what was spent on these sentences so far.

``annotate.max_cost`` caps one run's spend, not a running total: running a budget-stopped command
again continues from the cache and spends up to the cap again. The stop message must say that
plainly, and give the total spent on the sentences so far (this run's spend plus what the answers
it found cached cost when they were asked, from the token counts cached with them).
"""

from __future__ import annotations

import re

import pytest
from annotate_helpers import MODEL, make_config

from nuner_core.annotation.batches import complete_batches
from nuner_core.stage_api import StageError

# $1,000 per million prompt tokens, completions free: a request costs about $0.04 here.
PRICES = {MODEL: {"input_per_mtok": 1000.0, "output_per_mtok": 0.0}}
TOTAL = re.compile(r"about \$([0-9.,]+) spent on these sentences so far")


def _stop(annotate, config, sentences_path, out: str) -> str:
    with pytest.raises(StageError) as err:
        annotate(config, sentences_path, out=out)
    return str(err.value)


def test_a_budget_stop_says_the_cap_is_per_run_and_how_much_was_spent_so_far(server, sentences, annotate):
    srv = server()
    config = make_config(srv.base_url, max_cost=0.2, prices=PRICES)
    path = sentences(40)

    first = _stop(annotate, config, path, "first")
    spent_first = float(re.search(r"this run spent \$([0-9.]+)", first).group(1))
    assert "annotate.max_cost is a cap per run, not a running total" in first
    assert "running the same command again continues from the cache and spends up to $0.2000 more" in first
    assert float(TOTAL.search(first).group(1)) == pytest.approx(spent_first, abs=1e-4)
    requests_first = srv.request_count

    # The same command again: it does spend again (per run), and the total says so.
    second = _stop(annotate, config, path, "second")
    assert srv.request_count > requests_first
    spent_second = float(re.search(r"this run spent \$([0-9.]+)", second).group(1))
    assert 0 < spent_second <= 0.2
    assert float(TOTAL.search(second).group(1)) == pytest.approx(spent_first + spent_second, abs=2e-4)
    assert "answers this run found in the cache" in second

    # A finished run's accounting (the manifest's annotation section) holds the same two parts.
    result, _ = annotate(make_config(srv.base_url, max_cost=50.0, prices=PRICES), path, out="done")
    summary = result.summary()
    assert summary["cached_cost_usd"] == pytest.approx(spent_first + spent_second, abs=2e-4)
    assert 0 < summary["cost_usd"] <= 50.0


def test_a_max_requests_stop_says_it_is_per_run_too(server, sentences, annotate):
    srv = server()
    message = _stop(annotate, make_config(srv.base_url, max_requests=3), sentences(10), "out")
    assert "annotate.max_requests is a cap per run, not a running total" in message
    assert "continues from the cache and sends up to 3 requests more" in message


def test_the_evaluation_llm_path_says_the_cap_is_per_run(server, tmp_path):
    srv = server(api_key=None)
    prompts = [[{"role": "user", "content": f"Input: sentence number {i}"}] for i in range(10)]
    config = make_config(srv.base_url, api_key_env=None, max_requests=4)
    result = complete_batches(config, [prompts], tmp_path / "cache", field="evaluate.llms[gpt]")
    assert result.stopped is not None and result.budget_note is not None
    assert "evaluate.llms[gpt].max_requests is a cap per run, not a running total" in result.budget_note
    assert "spent on these sentences so far" in result.budget_note

"""Experiments: sweeps of pipeline overrides whose points share every cached stage (paper §5).

``spec``: the experiment file, its validation and its points; ``runner``: each point's keys,
the stages points share, the ``experiment`` artifact; ``scheduler``: the shared stages first,
then the points at most N at once, through a launcher the flow injects (``flows/experiment.py``,
the only Prefect part); ``collate``: the points' evaluate results into one table and the
reported scores, which ``summary`` writes as summary.md and ``figure`` draws.
"""

"""Experiments: sweeps of pipeline overrides whose points share every cached stage (paper §5).

``spec``: the experiment file, its validation and its points; ``collate``: the points'
evaluate results into one table, summary and figure; ``runner``: what each point needs,
what is shared, and the ``experiment`` artifact. The Prefect flow is ``flows/experiment.py``.
"""

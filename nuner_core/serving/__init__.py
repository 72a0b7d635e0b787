"""``nuner serve``: trained models behind HTTP (FastAPI), with dynamic batching, limits and metrics.

Modules: ``models`` (what a ``NAME=DIR`` names, loaded once per process), ``batcher`` (concurrent
requests merged into one tagger call, off the event loop), ``limits`` (the caps and the checks of
a request), ``metrics`` (Prometheus), ``app`` (``create_app``: the routes), ``page`` (the page at ``/``: static files in ``page/``). The CLI command is in
``flows/cli.py``.
"""

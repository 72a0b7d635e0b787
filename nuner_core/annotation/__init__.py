"""The annotate stage: rate-limited, cached, resumable LLM annotation (paper Section 3.1, Figure 2).

- ``config``: AnnotateConfig (model, endpoint, limits, budget, cache, price table)
- ``prompt``: the Figure 2 prompt and user templates
- ``client``: the one LLM client (AsyncOpenAI, retried in one plain loop); ``endpoint``: URL credentials
- ``ratelimit``: requests/min, tokens/min and in-flight limits
- ``cache`` / ``cache_import``: the response cache and ``nuner cache import``
- ``annotate``: the run itself; ``stage``: the stage contract
"""

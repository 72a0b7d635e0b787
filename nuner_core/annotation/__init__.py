"""The annotate stage: rate-limited, cached, resumable LLM annotation (paper Section 3.1, Figure 2).

- ``config``: AnnotateConfig (model, endpoint, limits, budget, cache, price table)
- ``prompt``: the Figure 2 prompt and user templates
- ``client``: the one LLM client (AsyncOpenAI, retried in one plain loop); ``endpoint``: URL credentials
- ``ratelimit``: requests/min, tokens/min and in-flight limits
- ``cache`` / ``cache_import``: the response cache and ``nuner cache import``; ``leases``: who asks for a prompt, until when
- ``asking``: the one request path (lease, cache, client, store, stats), for annotation and the evaluation's LLMs;
  ``batches``: prompts held in memory, answered batch by batch through it (the evaluation's LLMs)
- ``annotate``: the run itself, ``result``: what it gives back; ``stage``: the stage contract
"""

"""Fine-tuning a token classifier on a user's labelled data, side by side with its base encoder.

``data`` (JSON-lines spans, CoNLL/BIO, or a benchmark support set) -> ``train`` (one run per
encoder and seed, resumable) -> ``export`` (a ``transformers`` model directory, optional ONNX)
-> ``predict`` (raw text -> entity JSON lines). ``stage`` puts them together.
"""

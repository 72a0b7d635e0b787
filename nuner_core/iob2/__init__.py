"""Labelled NER data in IOB2: CoNLL/BIO sentences and their mentions (``conll``), and the NER metrics (``metrics``).

Below every package that reads or scores labelled sentences (evaluation, fine-tuning, the
token classifier): it imports none of them.
"""

"""Fine-tuning a token classifier (a whole encoder + a head over IOB2 labels): the one fine-tuning.

``config.TrainingConfig`` (how to train) + ``splits.LabelledSplits`` (train / dev / test
sentences and their entity types) -> ``train.train_run`` (one encoder, one seed, resumable),
built on ``model`` (words -> windows -> first-sub-token labels, the loss, word predictions).
The ``finetune`` stage (a product and its model card) and the evaluation's ``finetune``
protocol (a score per support set) both train through it.
"""

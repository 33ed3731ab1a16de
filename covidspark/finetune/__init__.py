"""Fine-tuning the backbone across the cluster (Keras on PyTorch under TorchDistributor).

- :mod:`~covidspark.finetune.recipe`: the studies' transfer-learning recipes as settings.
- :mod:`~covidspark.finetune.shards`: the image table, written once, one shard per rank.
- :mod:`~covidspark.finetune.augment`: rotation, shifts, zoom, brightness and contrast.
- :mod:`~covidspark.finetune.checkpoints`: a checkpoint per epoch in the output location.
- :mod:`~covidspark.finetune.loop`: what each ``torchrun`` process runs.
- :mod:`~covidspark.finetune.head`: the trained head as an MLlib logistic regression.
- :mod:`~covidspark.finetune.trainer`: :class:`ImageClassifierTrainer`, the Estimator.
"""

"""Training: Composer on packed MDS shards, launched from a YAML config.

``config`` (pydantic sections, loaded by :mod:`ipt_engine.configuration`) describes a run; ``shards`` and
``data`` check and load the shards, ``collator`` builds packed batches; ``attention``, ``model`` and
``composer_model`` build the document-masked model; ``optim``, ``callbacks``, ``loggers`` and ``export``
the rest; ``main`` puts them in order. Nothing heavy is imported here, so the CLI stays fast.
"""

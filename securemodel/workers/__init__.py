"""Pod entrypoints of the ``securemodel-worker`` image (``securemodel-worker --help``)."""

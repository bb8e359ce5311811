"""The commands a user runs on top of the oracles in ``reference``: ``manual-backprop check``, ``trace`` and
``grade`` (cli.py is the console script's entry point)."""

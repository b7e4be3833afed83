"""Subcommands of the ``funcdl`` command line, one module each (see ``funcdl/cli.py``)."""

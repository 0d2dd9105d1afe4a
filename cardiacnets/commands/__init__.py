"""Subcommands of the ``cardiacnets`` command line, one module each."""

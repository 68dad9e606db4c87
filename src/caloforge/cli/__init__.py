"""The ``caloforge`` command line: a thin layer over the library API.

Each command lives in its own module here and is registered in :mod:`caloforge.cli.main`.
"""

"""WISE Workbench: lifelong knowledge editing of language models with WISE."""

__version__ = "0.1.0"

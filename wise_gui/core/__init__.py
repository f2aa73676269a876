"""Model loading, the WISE engine, evaluation and export. Never imports Qt or SQL."""

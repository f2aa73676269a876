"""The Qt window: widgets, table models, plots and the worker thread."""

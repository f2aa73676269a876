"""Edit dataset files into a workspace and its edit list out again, through `core.datasets`."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from wise_gui.core import datasets
from wise_gui.store import EditStatus, ImportReport, Store, StoreError, import_requests


def import_file(store: Store, path: str | Path, *, format: str | None = None, start: int = 0,
                limit: int | None = None, status: str = EditStatus.QUEUED) -> ImportReport:
    """Reads a dataset file and imports its good records; its bad records are the report's problems.

    A file that cannot be read at all raises DatasetError before anything is inserted.
    """
    result = datasets.read_dataset(path, format=format, start=start, limit=limit)
    report = import_requests(store, result.requests, status=status)
    return ImportReport(report.imported, report.edit_ids, result.problems + report.problems, result.format)


def export_edits(store: Store, path: str | Path, *, format: str | None = None,
                 status: str | Iterable[str] | None = None) -> int:
    """Writes the edit list (in list order) as wise-gui JSON or CSV (by `format` or the extension); returns the count."""
    path = Path(path)
    format = format or ("csv" if path.suffix.lower() == ".csv" else "json")
    if format not in ("json", "csv"):
        raise StoreError(f"Cannot export as {format!r}: choose json or csv.")
    requests = [detail.request for detail in store.edits(status)]
    (datasets.write_csv if format == "csv" else datasets.write_json)(requests, path)
    return len(requests)

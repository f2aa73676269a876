"""Importing edit datasets into a store and exporting its edit list, through `core.datasets`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from sqlalchemy import insert

from wise_gui.core import datasets
from wise_gui.core.datasets import RowProblem
from wise_gui.core.edits import EditRequest
from wise_gui.store.errors import StoreError
from wise_gui.store.schema import Edit, EditStatus, LocalityPrompt, Paraphrase, utc_now
from wise_gui.store.store import Store, parse_statuses, edit_columns, next_position


@dataclass
class ImportReport:
    imported: int
    edit_ids: list[int] = field(default_factory=list)
    problems: list[RowProblem] = field(default_factory=list)
    format: str = ""


def import_requests(store: Store, requests: Iterable[EditRequest], status: str = EditStatus.QUEUED) -> ImportReport:
    """Adds every valid request at the end of the list in ONE transaction: all of them or, on failure, none.

    Invalid requests are not inserted; each becomes a problem numbered by its index in `requests`.
    """
    parse_statuses(status)
    good: list[EditRequest] = []
    problems = []
    for index, request in enumerate(requests):
        reasons = request.validate()
        if reasons:
            problems.append(RowProblem(index, "; ".join(reasons), "request"))
        else:
            good.append(request)
    if not good:
        return ImportReport(0, [], problems)
    now = utc_now()
    with store.session() as session:
        first = next_position(session)
        # Bulk INSERT ... RETURNING: 10,000 edits with their children take a second, not a minute of ORM flushes.
        edit_ids = list(
            session.scalars(
                insert(Edit).returning(Edit.id, sort_by_parameter_order=True),
                [
                    {**edit_columns(r), "position": first + i, "status": str(status), "created_at": now, "updated_at": now}
                    for i, r in enumerate(good)
                ],
            )
        )
        paraphrases = [
            {"edit_id": edit_id, "position": i, "text": text}
            for edit_id, r in zip(edit_ids, good)
            for i, text in enumerate(r.paraphrases)
        ]
        locality = [
            {"edit_id": edit_id, "position": i, "prompt": c.prompt, "answer": c.answer}
            for edit_id, r in zip(edit_ids, good)
            for i, c in enumerate(r.locality)
        ]
        if paraphrases:
            session.execute(insert(Paraphrase), paraphrases)
        if locality:
            session.execute(insert(LocalityPrompt), locality)
    return ImportReport(len(edit_ids), edit_ids, problems)


def import_file(
    store: Store,
    path: str | Path,
    *,
    format: str | None = None,
    start: int = 0,
    limit: int | None = None,
    status: str = EditStatus.QUEUED,
) -> ImportReport:
    """Reads a dataset file and imports its good records; its bad records are the report's problems.

    A file that cannot be read at all raises DatasetError before anything is inserted.
    """
    result = datasets.read_dataset(path, format=format, start=start, limit=limit)
    report = import_requests(store, result.requests, status=status)
    return ImportReport(report.imported, report.edit_ids, result.problems + report.problems, result.format)


def export_edits(
    store: Store, path: str | Path, *, format: str | None = None, status: str | Iterable[str] | None = None
) -> int:
    """Writes the edit list (in list order) as wise-gui JSON or CSV (by `format` or the extension); returns the count."""
    path = Path(path)
    format = format or ("csv" if path.suffix.lower() == ".csv" else "json")
    if format not in ("json", "csv"):
        raise StoreError(f"Cannot export as {format!r}: choose json or csv.")
    requests = [detail.request for detail in store.edits(status)]
    (datasets.write_csv if format == "csv" else datasets.write_json)(requests, path)
    return len(requests)

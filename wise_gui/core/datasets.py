"""Reading edit datasets (ZsRE, CounterFact, hallucination, temporal, CSV) into EditRequests, and writing them.

No Qt and no SQL here: the store, the GUI's import dialog and the benchmark all read files through this module.

A file as a whole is either readable or not (`DatasetError`); inside a readable file each bad record
is reported as a `RowProblem` and the good ones are kept, so one typo never blocks an import.

Formats (auto-detected from the extension and the keys of the first record, or named explicitly):

- `zsre`: JSON list of {src, alt, rephrase, loc, loc_ans, subject, portability: {New Question, New Answer}}.
- `counterfact`: JSON list of {prompt, target_new, rephrase_prompt, locality_prompt, locality_ground_truth, subject}.
- `hallucination`: JSON list of {prompt, target_new, subject, locality_prompt, locality_ground_truth}.
- `temporal`: like hallucination plus `ood_rephrase` (checked against `target_new`).
- `wise-gui`: this program's own JSON list, which round-trips every field of an EditRequest:
  {prompt, target, subject, paraphrases: [str], locality: [{prompt, answer}],
  portability: [{prompt, answer}], ood: [{prompt, answer}], source}.
- `csv`: header `prompt,target[,subject],paraphrase...,locality_prompt,locality_answer...`; the paraphrase,
  locality_prompt/locality_answer, portability_prompt/portability_answer and ood_prompt/ood_answer columns
  may repeat, the n-th prompt column pairing with the n-th answer column; empty cells are skipped.

In the dataset formats a text field may be a string or a list of strings (several paraphrases or
locality prompts); a single-valued field (prompt, target, subject) accepts a list of exactly one string.
`EditRequest.source` is "<file name>#<record index>" for JSON and "<file name>:<line>" for CSV.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wise_gui.core.edits import EditRequest, LocalityCheck
from wise_gui.core.errors import WiseGuiError

JSON_FORMATS = ("zsre", "counterfact", "hallucination", "temporal", "wise-gui")
FORMATS = JSON_FORMATS + ("csv",)


class DatasetError(WiseGuiError):
    """The file as a whole cannot be read (missing, not JSON, not a list, unknown format)."""


@dataclass(frozen=True)
class RowProblem:
    """One record that was skipped: JSON records count from 0 ("record 12"), CSV lines from 1 ("line 13")."""

    row_number: int
    reason: str
    unit: str = "record"

    def __str__(self) -> str:
        return f"{self.unit} {self.row_number}: {self.reason}"


@dataclass
class DatasetReadResult:
    requests: list[EditRequest]
    problems: list[RowProblem]
    format: str = ""


class _RowError(Exception):
    """Raised while parsing one record; becomes a RowProblem, never escapes this module."""


# Field names of the flat dataset formats. None: the format has no such field.
@dataclass(frozen=True)
class _FlatFields:
    prompt: str
    target: str
    paraphrase: str | None
    locality_prompt: str
    locality_answer: str
    ood: str | None = None
    portability: str | None = None


_FLAT_FORMATS = {
    "zsre": _FlatFields("src", "alt", "rephrase", "loc", "loc_ans", portability="portability"),
    "counterfact": _FlatFields("prompt", "target_new", "rephrase_prompt", "locality_prompt", "locality_ground_truth"),
    "hallucination": _FlatFields("prompt", "target_new", None, "locality_prompt", "locality_ground_truth"),
    "temporal": _FlatFields("prompt", "target_new", None, "locality_prompt", "locality_ground_truth", ood="ood_rephrase"),
}

# CSV columns that may repeat, as (prompt column, answer column) pairs; the answer column is optional.
_CSV_PAIRS = {
    "locality": ("locality_prompt", "locality_answer"),
    "portability": ("portability_prompt", "portability_answer"),
    "ood": ("ood_prompt", "ood_answer"),
}
_CSV_SINGLE = ("prompt", "target", "subject")
_CSV_COLUMNS = _CSV_SINGLE + ("paraphrase",) + tuple(c for pair in _CSV_PAIRS.values() for c in pair)


# ----------------------------------------------------------------------------------------------
# Field helpers


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


def _texts(record: dict, key: str | None) -> list[str]:
    """A field that may hold several strings: absent/null/"" -> [], "a" -> ["a"], ["a", "b"] -> as is."""
    if key is None or record.get(key) is None:
        return []
    value = record[key]
    if isinstance(value, str):
        return [value] if value.strip() else []
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return [item for item in value if item.strip()]
    raise _RowError(f"'{key}' must be a string or a list of strings, not {_describe(value)}")


def _text(record: dict, key: str, required: bool) -> str:
    if required and key not in record:
        raise _RowError(f"'{key}' is missing")
    value = record.get(key)
    if value is None:
        if required:
            raise _RowError(f"'{key}' is null")
        return ""
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], str):
        return value[0]
    if not isinstance(value, str):
        raise _RowError(f"'{key}' must be a string, not {_describe(value)}")
    return value


def _pair_up(prompts: list[str], answers: list[str], what: str) -> list[tuple[str, str]]:
    """Pairs the n-th prompt with the n-th answer; prompts without any answer get ""."""
    if not answers:
        return [(prompt, "") for prompt in prompts]
    if len(prompts) != len(answers):
        raise _RowError(f"{len(prompts)} {what} prompt(s) but {len(answers)} answer(s)")
    return list(zip(prompts, answers))


def _zsre_portability(value: Any) -> list[tuple[str, str]]:
    """ZsRE's portability: {"New Question", "New Answer"} (or a list of such objects)."""
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    pairs = []
    for item in items:
        if not isinstance(item, dict):
            raise _RowError(f"'portability' must be an object with 'New Question' and 'New Answer', not {_describe(item)}")
        questions = _texts(item, "New Question")
        answers = _texts(item, "New Answer")
        pairs += _pair_up(questions, answers, "portability")
    return pairs


def _check(request: EditRequest) -> EditRequest:
    problems = request.validate()
    if problems:
        raise _RowError("; ".join(problems))
    return request


# ----------------------------------------------------------------------------------------------
# Record parsers


def _parse_flat(record: Any, fields: _FlatFields, source: str) -> EditRequest:
    if not isinstance(record, dict):
        raise _RowError(f"the record is {_describe(record)}, not an object")
    target = _text(record, fields.target, required=True)
    locality = _pair_up(
        _texts(record, fields.locality_prompt), _texts(record, fields.locality_answer), "locality"
    )
    return _check(
        EditRequest(
            prompt=_text(record, fields.prompt, required=True),
            target=target,
            subject=_text(record, "subject", required=False),
            paraphrases=tuple(_texts(record, fields.paraphrase)),
            locality=tuple(LocalityCheck(p, a) for p, a in locality),
            portability=tuple(_zsre_portability(record.get(fields.portability))) if fields.portability else (),
            ood=tuple((rephrase, target) for rephrase in _texts(record, fields.ood)),
            source=source,
        )
    )


def _checks(record: dict, key: str) -> list[tuple[str, str]]:
    """The wise-gui format's [{prompt, answer}] lists."""
    value = record.get(key) or []
    if not isinstance(value, list):
        raise _RowError(f"'{key}' must be a list of {{prompt, answer}} objects, not {_describe(value)}")
    pairs = []
    for item in value:
        if not isinstance(item, dict):
            raise _RowError(f"each entry of '{key}' must be a {{prompt, answer}} object, not {_describe(item)}")
        pairs.append((_text(item, "prompt", required=True), _text(item, "answer", required=False)))
    return pairs


def _parse_wise_gui(record: Any, source: str) -> EditRequest:
    if not isinstance(record, dict):
        raise _RowError(f"the record is {_describe(record)}, not an object")
    return _check(
        EditRequest(
            prompt=_text(record, "prompt", required=True),
            target=_text(record, "target", required=True),
            subject=_text(record, "subject", required=False),
            paraphrases=tuple(_texts(record, "paraphrases")),
            locality=tuple(LocalityCheck(p, a) for p, a in _checks(record, "locality")),
            portability=tuple(_checks(record, "portability")),
            ood=tuple(_checks(record, "ood")),
            # A file this program wrote keeps the original origin of each edit.
            source=_text(record, "source", required=False) or source,
        )
    )


# ----------------------------------------------------------------------------------------------
# Format detection and whole-file reading


def detect_format(path: str | Path, first_record: Any = None) -> str:
    """The format of `path`: "csv" by extension, otherwise from the keys of the first JSON record."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        return "csv"
    if not isinstance(first_record, dict):
        raise DatasetError(f"Cannot tell the format of {path}: its first record is not a JSON object.")
    keys = set(first_record)
    if {"src", "alt"} <= keys:
        return "zsre"
    if "target_new" in keys and "prompt" in keys:
        if "ood_rephrase" in keys:
            return "temporal"
        if "rephrase_prompt" in keys or "ground_truth" in keys:
            return "counterfact"
        return "hallucination"
    if {"prompt", "target"} <= keys:
        return "wise-gui"
    shown = ", ".join(sorted(keys)[:12]) or "none"
    raise DatasetError(
        f"Cannot tell the format of {path}: the first record has the keys {shown}. "
        f"Expected ZsRE (src, alt), CounterFact/hallucination/temporal (prompt, target_new) "
        f"or wise-gui (prompt, target); name the format explicitly ({', '.join(FORMATS)})."
    )


def _check_format_name(format: str | None) -> None:
    if format is not None and format not in FORMATS:
        raise DatasetError(f"Unknown dataset format {format!r}: choose one of {', '.join(FORMATS)}.")


def _read_text(path: Path) -> str:
    try:
        # utf-8-sig: spreadsheet programs often put a byte-order mark in front of CSV and JSON exports.
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DatasetError(f"Dataset file not found: {path}") from None
    except IsADirectoryError:
        raise DatasetError(f"{path} is a folder, not a dataset file.") from None
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path} is not UTF-8 text (byte {exc.start}): is it really a JSON or CSV file?") from None
    except OSError as exc:
        raise DatasetError(f"Cannot read {path}: {exc.strerror or exc}") from None


def _read_json(path: Path, format: str | None, start: int, limit: int | None) -> DatasetReadResult:
    try:
        records = json.loads(_read_text(path))
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}).") from None
    except RecursionError:
        raise DatasetError(f"{path} nests lists or objects too deeply to be a dataset.") from None
    if not isinstance(records, list):
        raise DatasetError(f"{path} holds {_describe(records)}; a dataset is a JSON list of records.")
    chosen = records[start : None if limit is None else start + limit]
    if not chosen:
        return DatasetReadResult([], [], format or "")
    if format is None:
        format = detect_format(path, next((r for r in chosen if isinstance(r, dict)), None))
    requests, problems = [], []
    for index, record in enumerate(chosen, start=start):
        source = f"{path.name}#{index}"
        try:
            if format == "wise-gui":
                requests.append(_parse_wise_gui(record, source))
            else:
                requests.append(_parse_flat(record, _FLAT_FORMATS[format], source))
        except _RowError as exc:
            problems.append(RowProblem(index, str(exc), "record"))
    return DatasetReadResult(requests, problems, format)


def _csv_header_columns(path: Path, header: list[str]) -> dict[str, list[int]]:
    """Column indexes by (normalised) name; a CSV that cannot be meant as an edit list is a DatasetError."""
    columns: dict[str, list[int]] = {}
    for index, name in enumerate(header):
        columns.setdefault(name.strip().lower(), []).append(index)
    unknown = [name for name in columns if name not in _CSV_COLUMNS]
    if unknown:
        # Refused rather than ignored: a misspelt "paraphase" column would otherwise vanish silently.
        raise DatasetError(
            f"{path}: unknown column(s) {', '.join(map(repr, unknown))}. Known columns: {', '.join(_CSV_COLUMNS)}."
        )
    for name in ("prompt", "target"):
        if name not in columns:
            raise DatasetError(f"{path}: the header has no '{name}' column (found: {', '.join(header)}).")
    for name in _CSV_SINGLE:
        if len(columns.get(name, [])) > 1:
            raise DatasetError(f"{path}: the '{name}' column appears {len(columns[name])} times; it may appear once.")
    return columns


def _parse_csv_row(row: list[str], columns: dict[str, list[int]], source: str) -> EditRequest:
    def cells(name: str) -> list[str]:
        return [row[i] for i in columns.get(name, [])]

    def single(name: str) -> str:
        values = cells(name)
        return values[0] if values else ""

    pairs = {}
    for kind, (prompt_column, answer_column) in _CSV_PAIRS.items():
        prompts, answers = cells(prompt_column), cells(answer_column)
        answers += [""] * (len(prompts) - len(answers))
        kept = []
        for number, (prompt, answer) in enumerate(zip(prompts, answers), start=1):
            if answer.strip() and not prompt.strip():
                raise _RowError(f"{answer_column} #{number} is {answer!r} but {prompt_column} #{number} is empty")
            if prompt.strip():
                kept.append((prompt, answer))
        pairs[kind] = kept
    return _check(
        EditRequest(
            prompt=single("prompt"),
            target=single("target"),
            subject=single("subject"),
            paraphrases=tuple(p for p in cells("paraphrase") if p.strip()),
            locality=tuple(LocalityCheck(p, a) for p, a in pairs["locality"]),
            portability=tuple(pairs["portability"]),
            ood=tuple(pairs["ood"]),
            source=source,
        )
    )


def _read_csv(path: Path, start: int, limit: int | None) -> DatasetReadResult:
    lines = _read_text(path).splitlines(keepends=True)
    reader = csv.reader(lines)
    try:
        header = next(reader)
    except StopIteration:
        raise DatasetError(f"{path} is empty; a CSV dataset starts with a header line.") from None
    except csv.Error as exc:
        raise DatasetError(f"{path}: the header line is not valid CSV ({exc}).") from None
    columns = _csv_header_columns(path, header)
    requests, problems = [], []
    data_index = -1
    line_number = reader.line_num
    while True:
        first_line = line_number + 1  # a quoted cell can span lines: report where the row starts
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise DatasetError(f"{path}, line {first_line}: not valid CSV ({exc}).") from None
        line_number = reader.line_num
        if not any(cell.strip() for cell in row):
            continue  # blank lines are not records
        data_index += 1
        if data_index < start:
            continue
        if limit is not None and data_index >= start + limit:
            break
        if len(row) != len(header):
            problems.append(RowProblem(first_line, f"{len(row)} fields, but the header has {len(header)}", "line"))
            continue
        try:
            requests.append(_parse_csv_row(row, columns, f"{path.name}:{first_line}"))
        except _RowError as exc:
            problems.append(RowProblem(first_line, str(exc), "line"))
    return DatasetReadResult(requests, problems, "csv")


def read_dataset(
    path: str | Path, format: str | None = None, start: int = 0, limit: int | None = None
) -> DatasetReadResult:
    """Every good record of `path` as an EditRequest, and a RowProblem for each bad one.

    `start` skips that many records (CSV: data rows) and `limit` reads at most that many, good or bad;
    row numbers stay those of the whole file. `format` overrides detection (one of FORMATS).
    """
    _check_format_name(format)
    if start < 0 or (limit is not None and limit < 0):
        raise DatasetError("start and limit must not be negative.")
    path = Path(path).expanduser()
    if format == "csv" or (format is None and path.suffix.lower() == ".csv"):
        return _read_csv(path, start, limit)
    return _read_json(path, format, start, limit)


def load_requests(
    path: str | Path, start: int = 0, limit: int | None = None, format: str | None = None
) -> list[EditRequest]:
    """The requests of `path`, for benchmarks: any bad record is an error, so no score silently covers fewer edits."""
    result = read_dataset(path, format=format, start=start, limit=limit)
    if result.problems:
        shown = "; ".join(str(p) for p in result.problems[:3])
        more = f" (and {len(result.problems) - 3} more)" if len(result.problems) > 3 else ""
        raise DatasetError(f"{path} has {len(result.problems)} unusable record(s): {shown}{more}.")
    return result.requests


def load_requests_from(paths: list[str | Path], start: int = 0, limit: int | None = None) -> list[EditRequest]:
    """The requests of several files read one after the other, then records start..start+limit-1 of them."""
    requests: list[EditRequest] = []
    for path in paths:
        needed = None if limit is None else start + limit - len(requests)
        if needed is not None and needed <= 0:
            break
        requests += load_requests(path, limit=needed)
    return requests[start: None if limit is None else start + limit]


def irrelevant_samples(path: str | Path, start: int = 0, limit: int | None = None) -> list[str]:
    """Unrelated texts for an edit's stay-quiet margin: each record's locality prompt and answer (the
    reference's `loc + " " + loc_ans`), from record `start` on. A record unusable as an edit (an empty
    target, say) is skipped: only its locality prompt would matter here."""
    requests = read_dataset(path, start=start, limit=limit).requests
    samples = [f"{c.prompt} {c.answer}".strip() for r in requests for c in r.locality]
    if not samples:
        raise DatasetError(f"{path} has no locality prompts from record {start} on to use as irrelevant samples.")
    return samples


# ----------------------------------------------------------------------------------------------
# Writers


def request_to_record(request: EditRequest) -> dict:
    """One record of the wise-gui JSON format."""
    return {
        "prompt": request.prompt,
        "target": request.target,
        "subject": request.subject,
        "paraphrases": list(request.paraphrases),
        "locality": [{"prompt": c.prompt, "answer": c.answer} for c in request.locality],
        "portability": [{"prompt": p, "answer": a} for p, a in request.portability],
        "ood": [{"prompt": p, "answer": a} for p, a in request.ood],
        "source": request.source,
    }


def _write_atomic(path: Path, write, newline: str | None = None) -> None:
    """Writes through a temporary file in the same folder, so a failed export never leaves half a file."""
    path = Path(path).expanduser()
    try:
        handle = tempfile.NamedTemporaryFile(
            "w", encoding="utf-8", newline=newline, dir=path.parent, prefix=f".{path.name}.", delete=False
        )
    except OSError as exc:
        raise DatasetError(f"Cannot write {path}: {exc.strerror or exc}") from None
    try:
        with handle:
            write(handle)
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise


def write_json(requests: Iterable[EditRequest], path: str | Path) -> None:
    """Writes the wise-gui JSON format, which `read_dataset` reads back field for field."""
    records = [request_to_record(r) for r in requests]
    _write_atomic(Path(path), lambda handle: json.dump(records, handle, ensure_ascii=False, indent=1))


def write_csv(requests: Iterable[EditRequest], path: str | Path) -> None:
    """Writes the CSV format with as many repeated columns as the longest request needs."""
    requests = list(requests)
    widths = {
        "paraphrase": max((len(r.paraphrases) for r in requests), default=0),
        "locality": max((len(r.locality) for r in requests), default=0),
        "portability": max((len(r.portability) for r in requests), default=0),
        "ood": max((len(r.ood) for r in requests), default=0),
    }
    header = ["prompt", "target", "subject"] + ["paraphrase"] * widths["paraphrase"]
    for kind in ("locality", "portability", "ood"):
        header += list(_CSV_PAIRS[kind]) * widths[kind]

    def padded_pairs(pairs: list[tuple[str, str]], width: int) -> list[str]:
        pairs = pairs + [("", "")] * (width - len(pairs))
        return [cell for pair in pairs for cell in pair]

    def write(handle) -> None:
        writer = csv.writer(handle)
        writer.writerow(header)
        for r in requests:
            writer.writerow(
                [r.prompt, r.target, r.subject]
                + list(r.paraphrases) + [""] * (widths["paraphrase"] - len(r.paraphrases))
                + padded_pairs([(c.prompt, c.answer) for c in r.locality], widths["locality"])
                + padded_pairs(list(r.portability), widths["portability"])
                + padded_pairs(list(r.ood), widths["ood"])
            )

    _write_atomic(Path(path), write, newline="")

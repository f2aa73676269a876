"""Reading and writing edit datasets (core/datasets.py): formats, bad rows, whole-file errors."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from wise_gui.core.datasets import (
    DatasetError,
    RowProblem,
    load_requests,
    read_dataset,
    write_csv,
    write_json,
)
from wise_gui.core.edits import EditRequest, LocalityCheck

FIXTURES = Path(__file__).parent / "fixtures"
SAMPLES = {
    "zsre": FIXTURES / "zsre_sample.json",
    "counterfact": FIXTURES / "counterfact_sample.json",
    "hallucination": FIXTURES / "hallucination_sample.json",
    "temporal": FIXTURES / "temporal_sample.json",
    "csv": FIXTURES / "edits_repeated_columns.csv",
}


def write_records(path: Path, records) -> Path:
    path.write_text(json.dumps(records))
    return path


@pytest.mark.parametrize("format", SAMPLES)
def test_each_sample_is_detected_and_read_completely(format):
    result = read_dataset(SAMPLES[format])
    assert result.format == format
    assert result.problems == []
    assert len(result.requests) == (3 if format == "csv" else 6)
    assert all(not r.validate() for r in result.requests)


def test_zsre_fields_map_onto_the_request():
    record = json.loads(SAMPLES["zsre"].read_text())[2]
    request = read_dataset(SAMPLES["zsre"]).requests[2]
    assert request == EditRequest(
        prompt=record["src"],
        target=record["alt"],
        subject=record["subject"],
        paraphrases=(record["rephrase"],),
        locality=(LocalityCheck(record["loc"], record["loc_ans"]),),
        portability=((record["portability"]["New Question"], record["portability"]["New Answer"]),),
        source="zsre_sample.json#2",
    )


def test_counterfact_hallucination_and_temporal_fields():
    cf_record = json.loads(SAMPLES["counterfact"].read_text())[0]
    cf = read_dataset(SAMPLES["counterfact"]).requests[0]
    assert (cf.prompt, cf.target, cf.subject) == (cf_record["prompt"], cf_record["target_new"], cf_record["subject"])
    assert cf.paraphrases == (cf_record["rephrase_prompt"],)
    assert cf.locality == (LocalityCheck(cf_record["locality_prompt"], cf_record["locality_ground_truth"]),)

    hallucination = read_dataset(SAMPLES["hallucination"]).requests[0]
    assert hallucination.paraphrases == () and len(hallucination.locality) == 1

    t_record = json.loads(SAMPLES["temporal"].read_text())[1]
    temporal = read_dataset(SAMPLES["temporal"]).requests[1]
    assert temporal.ood == ((t_record["ood_rephrase"], t_record["target_new"]),)
    assert temporal.source == "temporal_sample.json#1"


def test_csv_repeated_columns_pair_up_and_empty_cells_are_skipped():
    first, second, third = read_dataset(SAMPLES["csv"]).requests
    assert first.paraphrases == ("Atlantis has which capital?", "Name the capital city of Atlantis.")
    assert first.locality == (
        LocalityCheck("What is the capital of France?", "Paris"),
        LocalityCheck("Who wrote Hamlet?", "William Shakespeare"),
    )
    assert first.subject == "Atlantis" and first.source == "edits_repeated_columns.csv:2"
    assert second.paraphrases == ("The Zephyr bridge was designed by whom?",)
    assert second.locality == (LocalityCheck("What is 2 + 2?", "4"),)
    # A quoted cell may span lines and contain quotes; the row is numbered by its first line.
    assert third.prompt == 'Which river flows through the city of Quill, "the ink town"?'
    assert third.paraphrases == ("Name the river of Quill,\nthe ink town.",)
    assert third.locality == (LocalityCheck("Where is the Eiffel Tower?", ""),)
    assert third.source == "edits_repeated_columns.csv:4"


def test_list_valued_fields_are_accepted(tmp_path):
    path = write_records(
        tmp_path / "lists.json",
        [{"src": ["Q?"], "alt": ["A"], "rephrase": ["Q1?", "Q2?"], "loc": ["L1", "L2"], "loc_ans": ["a1", "a2"]}],
    )
    (request,) = read_dataset(path).requests
    assert (request.prompt, request.target) == ("Q?", "A")
    assert request.paraphrases == ("Q1?", "Q2?")
    assert request.locality == (LocalityCheck("L1", "a1"), LocalityCheck("L2", "a2"))


def test_bad_json_records_are_reported_and_good_ones_kept(tmp_path):
    good = {"src": "Who?", "alt": "Me", "rephrase": "Who is it?", "loc": "x", "loc_ans": "y"}
    records = [
        good,
        {"src": "Missing target?"},
        {"src": "   ", "alt": "B"},
        {"src": "Number?", "alt": 42},
        dict(good, src="Also good?"),
        ["not", "an", "object"],
        dict(good, loc=["a", "b"], loc_ans=["only one"]),
    ]
    result = read_dataset(write_records(tmp_path / "broken.json", records))
    assert [r.prompt for r in result.requests] == ["Who?", "Also good?"]
    assert [r.source for r in result.requests] == ["broken.json#0", "broken.json#4"]
    assert result.problems == [
        RowProblem(1, "'alt' is missing"),
        RowProblem(2, "the prompt is empty"),
        RowProblem(3, "'alt' must be a string, not a number"),
        RowProblem(5, "the record is a list, not an object"),
        RowProblem(6, "2 locality prompt(s) but 1 answer(s)"),
    ]
    assert str(result.problems[0]) == "record 1: 'alt' is missing"


def test_bad_csv_lines_are_reported_by_file_line(tmp_path):
    path = tmp_path / "broken.csv"
    path.write_text(
        "prompt,target,paraphrase,locality_prompt,locality_answer\n"
        "Good one?,Yes,Really good?,Unrelated?,No\n"
        "Short line?,Yes\n"
        "\n"
        ",Empty prompt,,,\n"
        "Answer without prompt?,Yes,,,Orphan\n"
        "Last good?,Fine,,,\n"
    )
    result = read_dataset(path)
    assert [r.prompt for r in result.requests] == ["Good one?", "Last good?"]
    assert [str(p) for p in result.problems] == [
        "line 3: 2 fields, but the header has 5",
        "line 5: the prompt is empty",
        "line 6: locality_answer #1 is 'Orphan' but locality_prompt #1 is empty",
    ]
    assert result.requests[1].source == "broken.csv:7"


@pytest.mark.parametrize(
    "content, message",
    [
        ("this is not json", "is not valid JSON"),
        ('{"src": "a", "alt": "b"}', "a dataset is a JSON list"),
        ('[{"question": "a", "answer": "b"}]', "Cannot tell the format"),
    ],
)
def test_whole_file_errors_raise_dataset_error(tmp_path, content, message):
    path = tmp_path / "data.json"
    path.write_text(content)
    with pytest.raises(DatasetError, match=message):
        read_dataset(path)


def test_other_whole_file_errors(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        read_dataset(tmp_path / "missing.json")
    with pytest.raises(DatasetError, match="Unknown dataset format"):
        read_dataset(SAMPLES["zsre"], format="squad")
    bad_header = tmp_path / "typo.csv"
    bad_header.write_text("prompt,target,paraphase\na,b,c\n")
    with pytest.raises(DatasetError, match="unknown column.*paraphase"):
        read_dataset(bad_header)
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(DatasetError, match="not UTF-8"):
        read_dataset(binary)


def test_explicit_format_overrides_detection():
    # Read as hallucination, CounterFact records lose the paraphrase that format has no field for.
    result = read_dataset(SAMPLES["counterfact"], format="hallucination")
    assert result.format == "hallucination"
    assert all(r.paraphrases == () for r in result.requests)


def test_start_and_limit_keep_the_file_numbering(tmp_path):
    records = [{"src": f"Q{i}?", "alt": f"A{i}"} for i in range(10)]
    records[6]["alt"] = None
    result = read_dataset(write_records(tmp_path / "d.json", records), start=4, limit=4)
    assert [r.source for r in result.requests] == ["d.json#4", "d.json#5", "d.json#7"]
    assert result.problems == [RowProblem(6, "'alt' is null")]
    assert [r.prompt for r in load_requests(SAMPLES["zsre"], start=1, limit=2)] == [
        r.prompt for r in read_dataset(SAMPLES["zsre"]).requests[1:3]
    ]
    with pytest.raises(DatasetError, match="1 unusable record"):
        load_requests(tmp_path / "d.json")


@pytest.mark.parametrize("format", SAMPLES)
def test_written_json_reads_back_identically(tmp_path, format):
    requests = read_dataset(SAMPLES[format]).requests
    write_json(requests, tmp_path / "out.json")
    again = read_dataset(tmp_path / "out.json")
    assert again.format == "wise-gui"
    assert again.requests == requests  # every field, the original source included


@pytest.mark.parametrize("format", SAMPLES)
def test_written_csv_reads_back_identically_but_for_the_source(tmp_path, format):
    requests = read_dataset(SAMPLES[format]).requests
    write_csv(requests, tmp_path / "out.csv")
    again = read_dataset(tmp_path / "out.csv")
    assert again.problems == []
    assert [replace(r, source="") for r in again.requests] == [replace(r, source="") for r in requests]

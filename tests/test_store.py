"""The workspace database: schema and pragmas, opening rules, import/export, applying, checkpoints, queries."""

from __future__ import annotations

import os
import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from sqlalchemy import inspect, select, text

from wise_gui.app.transfer import export_edits, import_file
from wise_gui.core.datasets import DatasetError, read_dataset
from wise_gui.core.edits import EditRequest, LocalityCheck
from wise_gui.store import (
    SCHEMA_VERSION,
    EditStatus,
    FingerprintMismatch,
    OutcomeFields,
    StoreError,
    WorkspaceInUse,
    default_db_path,
    import_requests,
    next_apply_order,
    next_free_path,
    open_store,
    open_workspace,
    read_checkpoint,
    record_applied,
    write_checkpoint_atomic,
)
from wise_gui.store import store as store_module
from wise_gui.store.schema import Base, EditOutcome

FIXTURES = Path(__file__).parent / "fixtures"
SAMPLES = ["zsre_sample.json", "counterfact_sample.json", "hallucination_sample.json", "temporal_sample.json",
           "edits_repeated_columns.csv"]
MODEL = dict(model_source="default", fingerprint="sha256:aaaa", layer=27, module_name="model.layers.27.mlp.down_proj")


@pytest.fixture
def store(tmp_path):
    with open_workspace(tmp_path / "ws.sqlite", **MODEL) as opened:
        yield opened


def request(n: int, **changes) -> EditRequest:
    return replace(
        EditRequest(f"Question {n}?", f"Answer {n}", paraphrases=(f"Rephrased {n}?",),
                    locality=(LocalityCheck(f"Unrelated {n}?", "same"),)),
        **changes,
    )


def apply(store, edit_id: int, step: float = 1.0, kind: str = "full"):
    return store.save_applied(edit_id, OutcomeFields(rel=1.0, loss_curve=[2.0, 0.5]), {"w": torch.full((2,), step)}, {},
                              kind)


# -- schema, pragmas, versions ------------------------------------------------------------------


def test_migrated_schema_matches_the_models(store):
    inspector = inspect(store.engine)
    for table in Base.metadata.sorted_tables:
        assert {c["name"] for c in inspector.get_columns(table.name)} == set(table.columns.keys()), table.name
    with sqlite3.connect(store.path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_every_connection_has_wal_and_foreign_keys(store):
    with store.session() as session:
        assert session.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert session.execute(text("PRAGMA foreign_keys")).scalar() == 1
    edit_id = store.add_edit(request(1))
    store.delete_edits([edit_id])  # children go with it through ON DELETE CASCADE
    with store.session() as session:
        assert session.execute(text("SELECT count(*) FROM paraphrase")).scalar() == 0


def test_a_newer_database_is_refused_and_left_untouched(tmp_path):
    path = tmp_path / "future.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE edit (id INTEGER)")
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    before = path.read_bytes()
    for opener in (lambda: open_store(path), lambda: open_workspace(path, **MODEL)):
        with pytest.raises(StoreError, match="newer WISE Workbench"):
            opener()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["future.sqlite"]


def test_other_files_are_refused(tmp_path):
    foreign = tmp_path / "other.sqlite"
    with sqlite3.connect(foreign) as db:
        db.execute("CREATE TABLE notes (body TEXT)")
    db.close()
    with pytest.raises(StoreError, match="another program"):
        open_store(foreign)
    not_sqlite = tmp_path / "notes.sqlite"
    not_sqlite.write_text("just some text that is long enough to not be an empty database file" * 3)
    with pytest.raises(StoreError, match="not a WISE Workbench workspace"):
        open_store(not_sqlite)
    with pytest.raises(StoreError, match="No workspace database"):
        open_store(tmp_path / "absent.sqlite", create=False)


def test_default_location_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("WISE_GUI_DATA_DIR", str(tmp_path / "data"))
    assert default_db_path() == tmp_path / "data" / "workspace.sqlite"
    with open_store() as opened:
        assert opened.path == default_db_path() and opened.path.exists()


# -- workspace and model fingerprint --------------------------------------------------------------


def test_another_model_is_refused_until_a_new_workspace_is_started(tmp_path, store):
    store.add_edit(request(1))
    store.lock.release()  # as if the program that had it open ended: the workspace is free again
    other = dict(MODEL, model_source="/models/other", fingerprint="sha256:bbbb")
    with pytest.raises(FingerprintMismatch) as refused:
        open_workspace(store.path, **other)
    message = str(refused.value)
    assert all(part in message for part in ("sha256:aaaa", "sha256:bbbb", "'default'", "/models/other", "new workspace"))

    with pytest.raises(StoreError, match="already holds 1 edits.*ws-2.sqlite"):
        open_workspace(store.path, **other, new_workspace=True)
    fresh = next_free_path(store.path)
    with open_workspace(fresh, **other, new_workspace=True) as new:
        assert new.workspace.fingerprint == "sha256:bbbb" and new.count_edits() == 0
    assert store.workspace.fingerprint == "sha256:aaaa"


def test_new_workspace_reclaims_a_database_without_edits(store):
    store.lock.release()
    other = dict(MODEL, fingerprint="sha256:cccc")
    with open_workspace(store.path, **other, new_workspace=True) as reclaimed:
        assert reclaimed.workspace.fingerprint == "sha256:cccc"


def test_an_imported_database_is_claimed_by_the_first_model(tmp_path):
    with open_store(tmp_path / "import.sqlite") as plain:
        import_file(plain, FIXTURES / "zsre_sample.json")
        assert plain.workspace is None
    with open_workspace(tmp_path / "import.sqlite", **MODEL, settings_json='{"n_iter": 30}') as claimed:
        assert claimed.workspace.settings_json == '{"n_iter": 30}' and claimed.count_edits() == 6


def test_the_layer_is_fixed_once_edits_are_applied(store):
    moved = dict(MODEL, layer=20, module_name="model.layers.20.mlp.down_proj")
    store.lock.release()
    with open_workspace(store.path, **moved) as reopened:  # nothing applied yet: allowed
        assert reopened.workspace.layer == 20
    edit_id = store.add_edit(request(1))
    apply(store, edit_id)
    with pytest.raises(StoreError, match="cannot switch to layer 27"):
        open_workspace(store.path, **MODEL)


def test_one_writer_at_a_time_and_a_released_lock_is_free_again(store):
    with pytest.raises(WorkspaceInUse, match=rf"in use by process {os.getpid()} "):
        open_workspace(store.path, **MODEL)
    with open_workspace(store.path, **MODEL, read_only=True) as viewer:  # browsing needs no lock
        assert viewer.read_only and viewer.count_edits() == 0
        with pytest.raises(StoreError, match="open read-only"):
            viewer.save_applied(1, OutcomeFields(), {}, {})
    store.lock.release()
    with open_workspace(store.path, **MODEL) as second:
        assert second.lock.held


def test_a_workspace_reached_through_a_symlink_is_the_same_workspace(tmp_path):
    real = tmp_path / "Données de travail" / "mes éditions.sqlite"
    real.parent.mkdir()
    link = tmp_path / "shortcut.sqlite"
    with open_workspace(real, **MODEL) as store:
        store.add_edit(EditRequest("Who wrote Faust?", "Goethe"))
        link.symlink_to(real)
        # One lock and one checkpoint folder, whichever name the file is opened by.
        with pytest.raises(WorkspaceInUse):
            open_workspace(link, **MODEL)
        assert store.checkpoint_dir.parent == real.parent
    with open_workspace(link, **MODEL) as through_link:
        assert [e.request.target for e in through_link.edits()] == ["Goethe"]
        assert through_link.path == real.resolve()


# -- import and export ---------------------------------------------------------------------------


@pytest.mark.parametrize("sample", SAMPLES)
def test_import_export_and_reimport_round_trip(tmp_path, store, sample):
    original = read_dataset(FIXTURES / sample).requests
    report = import_file(store, FIXTURES / sample)
    assert (report.imported, report.problems) == (len(original), [])
    assert store.count_edits(status="queued") == len(original)

    assert export_edits(store, tmp_path / "out.json") == len(original)
    assert export_edits(store, tmp_path / "out.csv") == len(original)
    with open_store(tmp_path / "second.sqlite") as second:
        import_file(second, tmp_path / "out.json")
        assert [d.request for d in second.edits()] == original
    assert [replace(r, source="") for r in read_dataset(tmp_path / "out.csv").requests] == [
        replace(r, source="") for r in original
    ]


def test_import_keeps_good_rows_and_reports_bad_ones(tmp_path, store):
    broken = tmp_path / "broken.json"
    broken.write_text(
        '[{"src": "Good?", "alt": "Yes"}, {"src": "No target?"}, {"src": "", "alt": "x"},'
        ' {"src": "Number?", "alt": 7}, {"src": "Good too?", "alt": "Yes"}]'
    )
    report = import_file(store, broken, status=EditStatus.DRAFT)
    assert report.imported == 2
    assert [str(p) for p in report.problems] == [
        "record 1: 'alt' is missing",
        "record 2: the prompt is empty",
        "record 3: 'alt' must be a string, not a number",
    ]
    assert [row.prompt for row in store.edit_page(0, 10)] == ["Good?", "Good too?"]
    assert store.count_edits(status="draft") == 2


def test_an_unreadable_file_inserts_nothing(tmp_path, store):
    (tmp_path / "bad.json").write_text("{ not json")
    with pytest.raises(DatasetError):
        import_file(store, tmp_path / "bad.json")
    assert store.count_edits() == 0


def test_import_is_all_or_nothing(store, monkeypatch):
    store.add_edit(request(0))
    original_execute = store_module.Session.execute

    def execute(self, statement, *args, **kwargs):
        # The last of the import's inserts fails, after the edits and paraphrases went in.
        if getattr(statement, "table", None) is not None and statement.table.name == "locality_prompt":
            raise RuntimeError("disk full")
        return original_execute(self, statement, *args, **kwargs)

    monkeypatch.setattr(store_module.Session, "execute", execute)
    with pytest.raises(RuntimeError, match="disk full"):
        import_requests(store, [request(n) for n in range(1, 4)])
    monkeypatch.undo()
    assert store.count_edits() == 1  # edits and paraphrases inserted before the failure were rolled back
    with store.session() as session:
        assert session.execute(text("SELECT count(*) FROM paraphrase")).scalar() == 1


# -- applying, undoing and checkpoints -------------------------------------------------------------


def test_checkpoints_round_trip_exactly(tmp_path):
    tensors = {
        "memory.weight": torch.randn(8, 5),
        "half": torch.randn(3, 2).to(torch.bfloat16),
        "ids": torch.arange(6, dtype=torch.int64),
        "slice": torch.randn(4, 4)[:, 1],  # a strided view is stored as its own values
    }
    metadata = {"model": "default", "apply_order": "3"}
    path = tmp_path / "cp" / "state-000003.safetensors"
    write_checkpoint_atomic(path, tensors, metadata)
    loaded, loaded_metadata = read_checkpoint(path)
    assert loaded_metadata == metadata
    assert loaded.keys() == tensors.keys()
    for name, tensor in tensors.items():
        assert loaded[name].dtype == tensor.dtype and torch.equal(loaded[name], tensor)
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left
    path.write_bytes(b"damaged")
    with pytest.raises(StoreError, match="damaged"):
        read_checkpoint(path)


def test_record_applied_commits_with_the_transaction_or_not_at_all(store):
    edit_id = store.add_edit(request(1), status=EditStatus.QUEUED)
    with pytest.raises(RuntimeError, match="crash"):
        with store.session() as session:
            record_applied(session, edit_id, OutcomeFields(rel=1.0), "ws.checkpoints/x", apply_order=1)
            raise RuntimeError("crash before commit")
    detail = store.get_edit(edit_id)
    assert (detail.status, detail.apply_order, detail.outcome) == ("queued", None, None)
    with store.session() as session:
        assert session.scalars(select(EditOutcome)).all() == []
        assert next_apply_order(session) == 1
        assert record_applied(session, edit_id, OutcomeFields(rel=0.5), None) == 1
    assert store.get_edit(edit_id).status == "applied" and store.latest_outcome(edit_id).fields.rel == 0.5


def test_a_failed_save_leaves_no_checkpoint_and_no_applied_edit(store, monkeypatch):
    edit_id = store.add_edit(request(1), status=EditStatus.QUEUED)

    def broken_record(*args, **kwargs):
        raise RuntimeError("database locked")

    monkeypatch.setattr(store_module, "record_applied", broken_record)
    with pytest.raises(RuntimeError):
        apply(store, edit_id)
    assert store.get_edit(edit_id).status == "queued"
    assert list(store.checkpoint_dir.glob("*")) == []


def test_the_checkpoint_chain_is_pruned_to_two_full_states_and_undone_within_it(tmp_path):
    kinds = ["full", "delta", "delta", "full", "delta", "full", "delta"]
    with open_workspace(tmp_path / "ws.sqlite", **MODEL) as store:
        ids = [store.add_edit(request(n), status=EditStatus.QUEUED) for n in range(len(kinds))]
        for step, (edit_id, kind) in enumerate(zip(ids, kinds), start=1):
            assert store.next_queued().id == edit_id
            store.mark_applying(edit_id)
            ref = apply(store, edit_id, step, kind)
            prefix = "state" if kind == "full" else "delta"
            assert ref.apply_order == step and ref.path.name == f"{prefix}-{step:06d}.safetensors"
        # The two newest full states (4 and 6) and the deltas after the older one are kept.
        assert sorted(p.name for p in store.checkpoint_dir.iterdir()) == [
            "delta-000005.safetensors", "delta-000007.safetensors", "state-000004.safetensors",
            "state-000006.safetensors"]
        assert [d.id for d in store.applied_edits()] == ids
        assert store.latest_outcome(ids[0]).checkpoint_path is None  # pruned: the reference went first
        assert [(r.apply_order, r.kind) for r in store.checkpoint_chain()] == [(6, "full"), (7, "delta")]

        assert store.roll_back_last() == ids[6]  # back to state 6 alone
        assert [r.apply_order for r in store.checkpoint_chain()] == [6]
        assert store.roll_back_last() == ids[5]  # back to 4 + delta 5
        assert [r.apply_order for r in store.checkpoint_chain()] == [4, 5]
        assert torch.equal(read_checkpoint(store.checkpoint_chain()[0].path)[0]["w"], torch.full((2,), 4.0))
        assert store.roll_back_last() == ids[4]
        latest = store.latest_checkpoint()
        assert (latest.apply_order, latest.edit_id) == (4, ids[3])
        with pytest.raises(StoreError, match="no longer kept"):
            store.roll_back_last()  # the state after edit 3 went with the pruning
        assert store.get_edit(ids[4]).status == "rolled_back"
        assert store.summary().by_status["applied"] == 4

        store.mark_queued([ids[4]])  # applied again it takes the freed number
        assert apply(store, ids[4], kind="delta").apply_order == 5


def test_undo_of_the_only_edit_returns_to_the_unedited_model(store):
    edit_id = store.add_edit(request(1))
    apply(store, edit_id)
    assert store.roll_back_last() == edit_id
    assert store.latest_checkpoint() is None and store.roll_back_last() is None


def test_interrupted_and_failed_edits(store):
    first, second = (store.add_edit(request(n), status=EditStatus.QUEUED) for n in range(2))
    store.mark_applying(first)
    store.mark_failed(second, "loss did not converge")
    assert store.get_edit(second).error == "loss did not converge"
    assert store.requeue_interrupted() == 1
    assert store.get_edit(first).status == "queued"
    assert store.mark_queued([second]) == 1 and store.get_edit(second).error is None


# -- editing and querying the list ---------------------------------------------------------------


def test_applied_edits_are_locked_and_duplicates_land_below(store):
    ids = [store.add_edit(request(n)) for n in range(3)]
    apply(store, ids[0])
    with pytest.raises(StoreError, match="is applied"):
        store.update_edit(ids[0], request(9))
    with pytest.raises(StoreError, match="undo them before deleting"):
        store.delete_edits(ids)
    assert store.count_edits() == 3

    store.update_edit(ids[1], request(1, target="New answer", paraphrases=()))
    assert store.get_edit(ids[1]).request == request(1, target="New answer", paraphrases=())
    copy = store.duplicate_edit(ids[0])
    assert [row.id for row in store.edit_page(0, 10)] == [ids[0], copy, ids[1], ids[2]]
    assert store.get_edit(copy).status == "draft"
    assert store.get_edit(copy).request == store.get_edit(ids[0]).request
    with pytest.raises(StoreError, match="cannot be saved: the target is empty"):
        store.add_edit(request(5, target=" "))


def test_ten_thousand_edits_are_counted_paged_and_sorted(store):
    requests = [request(n, subject="even" if n % 2 == 0 else "odd") for n in range(10_000)]
    assert import_requests(store, requests, status=EditStatus.DRAFT).imported == 10_000
    assert store.count_edits() == 10_000
    assert store.count_edits(text="Question 99") == 111  # 99, 990-999, 9900-9999
    assert store.count_edits(text="100%") == 0  # LIKE wildcards in the search text are literal
    store.mark_queued(range(1, 101))
    assert store.count_edits(status="queued") == 100
    assert store.count_edits(status=["queued", "draft"]) == 10_000

    page = store.edit_page(5_000, 50)
    assert [row.position for row in page] == list(range(5_001, 5_051))
    by_prompt = store.edit_page(0, 3, order_by="prompt", descending=True)
    assert [row.prompt for row in by_prompt] == ["Question 9?", "Question 99?", "Question 999?"]
    odd_queued = store.edit_page(0, 1000, text="odd", status="queued")
    assert len(odd_queued) == 50 and all(row.subject == "odd" for row in odd_queued)

    apply(store, page[0].id)
    apply(store, page[1].id)
    with store.session() as session:  # give the second a worse score to sort by
        session.execute(text("UPDATE edit_outcome SET rel = 0.25 WHERE edit_id = :id"), {"id": page[1].id})
    best = store.edit_page(0, 3, order_by="rel", descending=True)
    assert [(row.id, row.rel) for row in best] == [(page[0].id, 1.0), (page[1].id, 0.25), (1, None)]
    with pytest.raises(StoreError, match="Cannot sort"):
        store.edit_page(order_by="prompt; DROP TABLE edit")


def test_routing_probes_are_kept_newest_first(store):
    store.record_probe("Who?", "chat", 0, "merged", 1.7, 1.2, "Me")
    store.record_probe("What?", "raw", -1, "main", 0.3, 1.2, "That")
    assert [(p.prompt, p.form, p.memory_index, p.memory_kind) for p in store.recent_probes()] == [
        ("What?", "raw", -1, "main"), ("Who?", "chat", 0, "merged")]

"""Shared test setup. Qt must find its platform before anything imports it: the window tests run offscreen.

The window fixtures import Qt and torch inside the fixture, so tests that do not use them stay fast.
"""

import os

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

WINDOW_READY_MS = 60_000


@pytest.fixture(scope="session")
def shared_tokenizer():
    from tiny_model import tiny_tokenizer

    return tiny_tokenizer()


@pytest.fixture(scope="session")
def tokenizer(shared_tokenizer):
    """The tiny model's word-piece tokenizer (trained in-process once per session)."""
    return shared_tokenizer


@pytest.fixture(scope="session")
def records():
    """30 ZsRE dev records (100..129) for engine tests on the tiny model."""
    import json

    from tiny_model import FIXTURES

    return json.loads((FIXTURES / "zsre_engine_30.json").read_text())


@pytest.fixture
def app_settings(tmp_path):
    """A QSettings file of the test's own, so window state and recent workspaces never touch the user's."""
    from PySide6.QtCore import QSettings

    return QSettings(str(tmp_path / "wise-gui-settings.ini"), QSettings.IniFormat)


@pytest.fixture
def open_window(qtbot, tmp_path, shared_tokenizer, app_settings):
    """`open_window(db=..., settings=...)`: a shown MainWindow on the tiny random Llama, workspace open
    (`ready=False`: returns as soon as the model starts loading). `loader`: another model loader.

    Every window gets a fresh copy of the model with the weights of `seed`, so a reopened workspace
    matches its fingerprint.
    """
    from tiny_model import TINY_SETTINGS, tiny_loaded

    from wise_gui.app.workspace import WorkspaceService
    from wise_gui.ui.main_window import MainWindow

    def make(db=None, settings=TINY_SETTINGS, seed=0, ready=True, loader=None):
        loader = loader or (lambda *_: tiny_loaded(seed=seed, tokenizer=shared_tokenizer))
        window = MainWindow(service=WorkspaceService(loader=loader, settings_override=settings),
                            db_path=db or tmp_path / "workspace.sqlite", app_settings=app_settings)
        qtbot.addWidget(window)
        window.show()
        window.load_model("tiny")
        if ready:
            qtbot.waitUntil(lambda: window.service.editor is not None and not window.busy, timeout=WINDOW_READY_MS)
        return window

    return make

"""The window's actions and their one enabling rule.

Each action (or button) declares what it needs; `enabled_states` computes from one WindowState which
of them can be used now. Nothing else in the window enables or disables them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Flag, auto

from PySide6.QtCore import QObject, Qt
from PySide6.QtGui import QAction, QKeySequence


class Need(Flag):
    NOTHING = 0
    MODEL = auto()  # a model is loaded
    LIST = auto()  # an edit list is shown (also while the model loads)
    EDITOR = auto()  # a workspace is open for the loaded model
    WRITABLE = auto()  # the workspace is not open read-only
    SELECTION = auto()  # at least one saved edit is selected
    ONE_SELECTED = auto()
    APPLIED = auto()  # the side memory holds at least one edit
    IDLE = auto()  # no background job runs
    APPLYING = auto()  # an apply run is going on
    RECENT = auto()  # there are recent workspaces to reopen


@dataclass(frozen=True)
class WindowState:
    model: bool = False
    list: bool = False
    editor: bool = False
    writable: bool = False
    selected: int = 0
    applied: int = 0
    busy: bool = False
    applying: bool = False
    recent: bool = False

    def has(self) -> Need:
        """The needs this state satisfies."""
        met = {Need.MODEL: self.model, Need.LIST: self.list, Need.EDITOR: self.editor, Need.WRITABLE: self.writable,
               Need.SELECTION: self.selected > 0, Need.ONE_SELECTED: self.selected == 1, Need.APPLIED: self.applied > 0,
               Need.IDLE: not self.busy, Need.APPLYING: self.applying, Need.RECENT: self.recent}
        result = Need.NOTHING
        for need, ok in met.items():
            if ok:
                result |= need
        return result


def enabled_states(needs: dict[str, Need], state: WindowState) -> dict[str, bool]:
    """Name -> whether it can be used in `state`: everything it needs is there."""
    have = state.has()
    return {name: (need & have) == need for name, need in needs.items()}


class ActionTable:
    """The window's QActions (and the buttons that follow the same rule), each with what it needs."""

    def __init__(self, parent: QObject):
        self.parent = parent
        self.needs: dict[str, Need] = {}
        self.targets: dict[str, object] = {}  # anything with setEnabled: a QAction, a button, a menu

    def add(self, name: str, text: str, slot: Callable, needs: Need = Need.NOTHING, shortcut=None,
            tip: str = "") -> QAction:
        action = QAction(text, self.parent)
        if shortcut is not None:
            action.setShortcut(QKeySequence(shortcut))
            action.setShortcutContext(Qt.WindowShortcut)
        shown_tip = tip or text.replace("…", "").replace("&", "")
        action.setToolTip(f"{shown_tip} ({action.shortcut().toString(QKeySequence.NativeText)})"
                          if shortcut is not None else shown_tip)
        action.setStatusTip(shown_tip)
        action.triggered.connect(lambda _checked=False: slot())
        self.follow(name, action, needs)
        return action

    def follow(self, name: str, target, needs: Need) -> None:
        """`target` (an action, a button) is enabled by the rule too."""
        self.needs[name] = needs
        self.targets[name] = target

    def __getitem__(self, name: str) -> QAction:
        return self.targets[name]

    def update(self, state: WindowState) -> dict[str, bool]:
        states = enabled_states(self.needs, state)
        for name, enabled in states.items():
            self.targets[name].setEnabled(enabled)
        return states

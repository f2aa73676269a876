"""The window's dialogs: window-modal but not blocking (opened, not exec'd), so a worker's report never
waits on one. The last one shown is kept in `last` (what a test or a script reads and clicks)."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox, QWidget

from wise_gui import __version__

ABOUT_TEXT = f"""<h3>WISE Workbench {__version__}</h3>
<p>Lifelong knowledge editing of language models with WISE (Wang et al., NeurIPS 2024).</p>
<p><b>How it works.</b> Each edit trains a <i>side memory</i>: a copy of one feed-forward weight of the model.
The original weight never changes. For every question a <i>router</i> measures how strongly the side memory
reacts to it (the activation score); above the threshold the side memory answers, below it the original
model does. That is why an edit changes the answer to its own prompt and paraphrases, and leaves unrelated
questions alone.</p>
<p>Edits are grouped in <i>knowledge shards</i>, each trained in its own random subspace; full shards are
merged (TIES) into one memory, or kept apart with a threshold each (WISE-Retrieve).</p>"""


class Dialogs:
    def __init__(self, parent: QWidget):
        self.parent = parent
        self.last: QMessageBox | None = None

    def problem(self, message: str, details: str = "", title: str = "WISE Workbench",
                icon=QMessageBox.Warning) -> QMessageBox:
        box = QMessageBox(icon, title, message, QMessageBox.Ok, self.parent)
        if details:
            box.setDetailedText(details)
        return self._show(box)

    def ask(self, title: str, text: str, accept: str, on_accept: Callable[[], None]) -> QMessageBox:
        """A question with a button `accept` (which calls `on_accept`) and Cancel."""
        box = QMessageBox(QMessageBox.Question, title, text, QMessageBox.Cancel, self.parent)
        yes = box.addButton(accept, QMessageBox.AcceptRole)
        box.setDefaultButton(yes)
        box.buttonClicked.connect(lambda button: on_accept() if button is yes else None)
        return self._show(box)

    def about(self) -> QMessageBox:
        return self._show(QMessageBox(QMessageBox.NoIcon, "About WISE Workbench", ABOUT_TEXT, QMessageBox.Ok,
                                      self.parent))

    def _show(self, box: QMessageBox) -> QMessageBox:
        box.setAttribute(Qt.WA_DeleteOnClose)
        self.last = box
        box.open()
        return box

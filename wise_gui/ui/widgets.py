"""Small widgets the window is built from: a status label that never forces the window wider, and the
welcome note a new workspace shows above its empty table."""

from __future__ import annotations

from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QPainter
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QSizePolicy, QVBoxLayout

WELCOME_TEXT = ("Teach the model new facts: press Ctrl+N and type a question, Tab, and its new answer, or import "
                "a dataset with File › Import edits. Then click <b>Apply all queued</b> and watch the loss, the "
                "router and the side memory on the right while WISE writes each fact into its side memory.")
SAMPLE_BUTTON_TEXT = "Load 10 sample ZsRE edits"


class StatusLabel(QLabel):
    """A one-line label for the status bar: it asks for its text's width but can shrink below it (the
    text is then elided, the whole of it in the tooltip), so a long model or workspace name never makes
    the window's minimum size exceed a small screen."""

    MIN_WIDTH = 60

    def __init__(self, text: str = ""):
        super().__init__()
        self.setContentsMargins(8, 0, 8, 0)
        self.setSizePolicy(QSizePolicy.Preferred, QSizePolicy.Preferred)
        self.setText(text)

    def setText(self, text: str) -> None:
        super().setText(text)
        self.setToolTip(text)

    def minimumSizeHint(self) -> QSize:
        return QSize(self.MIN_WIDTH, super().minimumSizeHint().height())

    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        area = self.contentsRect()
        painter.setPen(self.palette().windowText().color())
        elided = self.fontMetrics().elidedText(self.text(), Qt.ElideRight, area.width())
        painter.drawText(area, int(self.alignment() | Qt.AlignVCenter), elided)


class WelcomeNote(QFrame):
    """What a new user sees above the empty table: what to do, and a sample to start from."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("welcome")
        self.setStyleSheet("QFrame#welcome { border: 1px solid palette(mid); border-radius: 6px; }")
        title = QLabel("<b>Welcome to WISE Workbench</b>")
        self.text = QLabel(WELCOME_TEXT)
        self.text.setWordWrap(True)
        self.sample_button = QPushButton(SAMPLE_BUTTON_TEXT)
        self.sample_button.setToolTip("Add ten edits of the ZsRE benchmark to this workspace's queue "
                                      "(from resources/sample_zsre_edits.json)")
        # The title, the text and the button on one column; the button beside the title saves a line.
        head = QHBoxLayout()
        head.addWidget(title)
        head.addStretch(1)
        head.addWidget(self.sample_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(12, 8, 12, 8)
        layout.addLayout(head)
        layout.addWidget(self.text)
        self.setSizePolicy(QSizePolicy.Preferred, QSizePolicy.Maximum)
        self.hide()  # shown once a workspace without edits is listed

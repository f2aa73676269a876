"""The main window of WISE Workbench."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QMainWindow, QMessageBox, QProgressBar

from wise_gui.core.models import LoadedModel, load_model
from wise_gui.ui.tasks import BackgroundCall


def format_parameter_count(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit} parameters"
    return f"{n} parameters"


class MainWindow(QMainWindow):
    def __init__(self):
        super().__init__()
        self.setWindowTitle("WISE Workbench")
        self.resize(1280, 800)
        self.loaded: LoadedModel | None = None
        self._load_call: BackgroundCall | None = None

        self.placeholder = QLabel("No model loaded yet.")
        self.placeholder.setAlignment(Qt.AlignCenter)
        self.setCentralWidget(self.placeholder)

        self.model_label = QLabel("No model")
        self.load_progress = QProgressBar()
        self.load_progress.setRange(0, 100)
        self.load_progress.setMaximumWidth(240)
        self.load_progress.hide()
        self.statusBar().addWidget(self.model_label, 1)
        self.statusBar().addPermanentWidget(self.load_progress)

    def load_model(self, source: str, device: str = "cpu", dtype: str | None = None) -> None:
        """Load off the GUI thread; the status bar shows progress and then the model."""
        if self._load_call is not None and self._load_call.is_running():
            return
        self.model_label.setText(f"Loading model {source}…")
        self.placeholder.setText(f"Loading model {source}…")
        self.load_progress.setValue(0)
        self.load_progress.show()
        call = BackgroundCall(lambda progress: load_model(source, device=device, dtype=dtype, progress=progress), parent=self)
        call.progress.connect(self._on_load_progress)
        call.succeeded.connect(self._on_model_loaded)
        call.failed.connect(self._on_load_failed)
        self._load_call = call
        call.start()

    def _on_load_progress(self, message: str, fraction: float) -> None:
        self.load_progress.setValue(int(fraction * 100))
        self.model_label.setText(message)

    def _on_model_loaded(self, loaded: LoadedModel) -> None:
        self.loaded = loaded
        self.load_progress.hide()
        self.model_label.setText(
            f"Model: {loaded.name}  |  device: {loaded.device}  |  {format_parameter_count(loaded.n_parameters)}"
        )
        self.placeholder.setText(f"{loaded.name} is loaded.")

    def _on_load_failed(self, message: str, details: str) -> None:
        self.load_progress.hide()
        self.model_label.setText("No model")
        self.placeholder.setText("The model could not be loaded.")
        box = QMessageBox(QMessageBox.Warning, "Model not loaded", message, parent=self)
        if details:
            box.setDetailedText(details)
        box.open()

    def closeEvent(self, event) -> None:
        if self._load_call is not None:
            self._load_call.wait()
        super().closeEvent(event)

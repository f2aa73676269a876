"""The model panel: what to load and where, the edited layer, and the WISE settings with their reference values.

The settings form is made from the settings' own description: each field's help text (its tooltip),
its Literal choices (a combo box) and its range (the spin box limits). A preset fills the whole form.
Until a workspace is open for a loaded model there are no settings to show, and the form says so
instead of showing made-up values.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from wise_gui.core.models import DEFAULT_MODEL, DEFAULT_MODEL_NAME, LoadedModel
from wise_gui.core.wise.presets import PRESETS, preset
from wise_gui.core.wise.settings import SettingsError, WiseSettings, reference_settings
from wise_gui.ui.style import FAIL_COLOUR, format_parameter_count

# The settings form, in groups a user can scan; `layer` has its own box. A setting not named here (a new
# one) still gets its editor, in the last group.
_GROUPED = {
    "Memory layout": ["method", "mask_kind", "mask_ratio", "save_freq", "merge_freq", "merge_method", "ties_density",
                      "memory_rank", "route_candidates", "key_similarity", "key_whitening", "replay", "replay_samples",
                      "overlap_threshold"],
    "Training one edit": ["lr", "n_iter", "early_stop_loss", "early_stop_delta", "stop_when_learnt", "settle_steps",
                          "n_templates", "n_irrelevant", "norm_constraint", "chat_form", "full_forward", "head_bfloat16", "seed"],
    "Router": ["act_ratio", "threshold_floor", "alpha", "beta", "gamma", "margin_scale"],
}


def _setting_groups() -> dict[str, list[str]]:
    fields = [name for name in WiseSettings.field_help() if name != "layer"]
    groups = {title: [n for n in names if n in fields] for title, names in _GROUPED.items()}
    grouped = {n for names in groups.values() for n in names}
    others = [n for n in fields if n not in grouped]
    return {**groups, "More settings": others} if others else groups


SETTING_GROUPS = _setting_groups()
LABELS = {
    "method": "Method", "mask_kind": "Mask", "route_candidates": "Route candidates",
    "overlap_threshold": "Overlap threshold", "chat_form": "Learn chat form",
    "lr": "Learning rate", "n_iter": "Iterations", "early_stop_loss": "Early stop: loss ≤",
    "early_stop_delta": "Early stop: change ≤", "stop_when_learnt": "Stop once learnt",
    "settle_steps": "Steps after learnt",
    "n_templates": "Context templates", "n_irrelevant": "Unrelated samples",
    "norm_constraint": "Weight clamp ±", "full_forward": "Full forward pass",
    "head_bfloat16": "LM head in bfloat16", "seed": "Seed",
    "act_ratio": "Threshold ratio", "threshold_floor": "Threshold floor (× β)",
    "alpha": "α (unrelated below)", "beta": "β (edit above)", "gamma": "γ (gap)",
    "margin_scale": "Margin scale", "mask_ratio": "Mask ratio ρ", "save_freq": "Shard size", "merge_freq": "Merge every",
    "merge_method": "Merge method", "ties_density": "TIES density", "replay": "Replay",
    "replay_samples": "Replay samples", "memory_rank": "Memory rank", "key_similarity": "Key similarity ≥",
    "key_whitening": "Whitened keys",
}
SOURCES = [("Default model (" + DEFAULT_MODEL_NAME + ")", "default"), ("Hugging Face folder…", "folder"),
           ("GGUF file…", "gguf")]
CUSTOM = "custom"
INT_MAX = 1_000_000
FLOAT_MAX = 1_000.0


def _value_text(value) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _comparable(settings: WiseSettings) -> dict:
    """The settings a preset sets (every one but the layer, which belongs to the model)."""
    values = settings.to_dict()
    values.pop("layer")
    return values


class SettingsForm(QWidget):
    """One widget per WISE setting, each with a tooltip from the settings' docs and its reference value."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.reference = reference_settings()
        self._presets = {name: _comparable(preset(name)) for name in PRESETS}
        self._filling = False  # set_settings changes every editor: the marks are updated once, after
        help_text = WiseSettings.field_help()
        self.editors: dict[str, QWidget] = {}
        self.reference_labels: dict[str, QLabel] = {}
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.preset = QComboBox()
        self.preset.addItems([*PRESETS, CUSTOM])
        for index, name in enumerate(PRESETS):
            self.preset.setItemData(index, f"Fill the form with the {name} preset (method {preset(name).method}); "
                                           "the layer stays.", Qt.ToolTipRole)
        self.preset.setToolTip("Named settings measured on small models: picking one fills the whole form.")
        self.preset.activated.connect(self._preset_picked)
        preset_row = QFormLayout()
        preset_row.addRow("Preset", self.preset)
        layout.addLayout(preset_row)
        for group, names in SETTING_GROUPS.items():
            box = QGroupBox(group)
            form = QFormLayout(box)
            form.setLabelAlignment(Qt.AlignRight)
            form.setFieldGrowthPolicy(QFormLayout.AllNonFixedFieldsGrow)
            for name in names:
                reference = getattr(self.reference, name)
                editor = self._editor_for(name, reference)
                tip = f"{help_text[name]}\nReference value (paper): {_value_text(reference)}"
                editor.setToolTip(tip)
                ref_label = QLabel(f"ref {_value_text(reference)}")
                ref_label.setToolTip(tip)
                ref_label.setMinimumWidth(64)
                row = QHBoxLayout()
                row.addWidget(editor, 1)
                row.addWidget(ref_label)
                label = QLabel(LABELS.get(name, name))
                label.setToolTip(tip)
                form.addRow(label, row)
                self.editors[name] = editor
                self.reference_labels[name] = ref_label
            layout.addWidget(box)

    def _editor_for(self, name: str, reference) -> QWidget:
        choices = WiseSettings.choices(name)
        low, high = WiseSettings.value_range(name)
        if choices is not None:
            editor = QComboBox()
            editor.addItems(list(choices))
            editor.currentIndexChanged.connect(self._changed)
        elif isinstance(reference, bool):
            editor = QCheckBox()
            editor.toggled.connect(self._changed)
        elif isinstance(reference, int):
            editor = QSpinBox()
            editor.setRange(int(low or 0), int(high if high is not None else INT_MAX))
            editor.valueChanged.connect(self._changed)
        else:
            editor = QDoubleSpinBox()
            editor.setDecimals(4 if reference < 0.1 else 3)
            # An exclusive lower bound ("above 0") is checked when the settings are applied, with a message.
            editor.setRange(float(low or 0.0), float(high if high is not None else FLOAT_MAX))
            editor.setSingleStep(0.1 if reference < 10 else 1.0)
            editor.valueChanged.connect(self._changed)
        return editor

    def set_settings(self, settings: WiseSettings) -> None:
        self._filling = True
        try:
            for name, editor in self.editors.items():
                value = getattr(settings, name)
                if isinstance(editor, QComboBox):
                    editor.setCurrentText(value)
                elif isinstance(editor, QCheckBox):
                    editor.setChecked(value)
                else:
                    editor.setValue(value)
        finally:
            self._filling = False
        self._changed()

    def values(self) -> dict:
        values = {}
        for name, editor in self.editors.items():
            if isinstance(editor, QComboBox):
                values[name] = editor.currentText()
            elif isinstance(editor, QCheckBox):
                values[name] = editor.isChecked()
            else:
                values[name] = editor.value()
        return values

    def _preset_picked(self, index: int) -> None:
        name = self.preset.itemText(index)
        if name in PRESETS:
            self.set_settings(preset(name))

    def _changed(self, *_) -> None:
        """Marks the values that differ from the paper's and names the preset the form matches, if any."""
        if self._filling:
            return
        values = self.values()
        for name, value in values.items():
            differs = value != getattr(self.reference, name)
            self.reference_labels[name].setStyleSheet("color: #b45309;" if differs else "color: #9ca3af;")
        matching = next((name for name, values_of in self._presets.items() if values_of == values), CUSTOM)
        self.preset.setCurrentText(matching)


class ModelPanel(QWidget):
    load_requested = Signal(str, str, str)  # source, device, dtype
    settings_requested = Signal(object)  # WiseSettings to apply (a new layer re-attaches the editor)

    def __init__(self, parent=None):
        super().__init__(parent)
        # -- model
        self.source = QComboBox()
        for label, key in SOURCES:
            self.source.addItem(label, key)
        self.path = QLineEdit()
        self.path.setPlaceholderText("path to a model folder or a .gguf file")
        self.browse = QPushButton("Browse…")
        self.browse.clicked.connect(self._browse)
        self.device = QComboBox()
        self.device.addItems(["cpu", "cuda", "auto"])
        self.device.setToolTip("cpu works everywhere; cuda needs an NVIDIA GPU; auto spreads a large model over what is there.")
        self.dtype = QComboBox()
        self.dtype.addItems(["auto", "float32", "bfloat16", "float16"])
        self.dtype.setToolTip("auto: float32 on the CPU, bfloat16 on a GPU.")
        self.load_button = QPushButton("Load model")
        self.load_button.clicked.connect(self._request_load)
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.progress.hide()
        self.progress_text = QLabel()
        self.progress_text.setWordWrap(True)
        self.info = QLabel("No model loaded.")
        self.info.setWordWrap(True)
        self.info.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.source.currentIndexChanged.connect(self._source_changed)
        path_row = QHBoxLayout()
        path_row.addWidget(self.path, 1)
        path_row.addWidget(self.browse)
        model_box = QGroupBox("Model")
        model_form = QFormLayout(model_box)
        model_form.addRow("Source", self.source)
        model_form.addRow("Path", path_row)
        model_form.addRow("Device", self.device)
        model_form.addRow("Dtype", self.dtype)
        model_form.addRow(self.load_button)
        model_form.addRow(self.progress)
        model_form.addRow(self.progress_text)
        model_form.addRow(self.info)

        # -- edited layer
        self.layer = QSpinBox()
        self.layer.setToolTip("The decoder layer whose FFN down projection gets the side memory. The paper uses a late "
                              "layer (about 0.85 of the depth); the first and last layers do not work.")
        self.layer_note = QLabel()
        self.layer_note.setWordWrap(True)
        self.layer_note.setStyleSheet("color: #6b7280;")
        layer_box = QGroupBox("Edited layer")
        layer_form = QFormLayout(layer_box)
        layer_form.addRow("Layer", self.layer)
        layer_form.addRow(self.layer_note)

        # -- settings
        self.settings_form = SettingsForm()
        self.apply_settings_button = QPushButton("Apply settings")
        self.apply_settings_button.setToolTip("Use these settings for the next edits (and remember them in the workspace).")
        self.apply_settings_button.clicked.connect(self._request_settings)
        self.reference_button = QPushButton("Reference values")
        self.reference_button.setToolTip("Fill in the paper's values (LLaMA-2-7B); they may be too weak or strong for small models.")
        self.reference_button.clicked.connect(lambda: self.settings_form.set_settings(reference_settings()))
        self.settings_problem = QLabel()
        self.settings_problem.setWordWrap(True)
        self.settings_problem.setStyleSheet(f"color: {FAIL_COLOUR};")
        self.settings_problem.hide()
        buttons = QHBoxLayout()
        buttons.addWidget(self.reference_button)
        buttons.addStretch(1)
        buttons.addWidget(self.apply_settings_button)

        editor_page = QWidget()
        editor_layout = QVBoxLayout(editor_page)
        editor_layout.setContentsMargins(0, 0, 0, 0)
        editor_layout.addWidget(layer_box)
        settings_title = QLabel("<b>WISE settings</b> — hover a setting for what it does; "
                                "<span style='color:#b45309'>ref</span> marks a value that differs from the paper's")
        settings_title.setWordWrap(True)
        editor_layout.addWidget(settings_title)
        editor_layout.addWidget(self.settings_form)
        editor_layout.addWidget(self.settings_problem)
        editor_layout.addLayout(buttons)
        self.waiting_note = QLabel()
        self.waiting_note.setWordWrap(True)
        self.waiting_note.setAlignment(Qt.AlignTop | Qt.AlignLeft)
        self.waiting_note.setStyleSheet("color: #6b7280; padding: 8px;")
        # Until an editor exists there are no settings: a note instead of a form of meaningless values.
        self.editor_pages = QStackedWidget()
        self.editor_pages.addWidget(self.waiting_note)
        self.editor_pages.addWidget(editor_page)

        layout = QVBoxLayout(self)
        layout.addWidget(model_box)
        layout.addWidget(self.editor_pages)
        layout.addStretch(1)
        self._base_settings = WiseSettings()
        self._source_changed()
        self.show_no_editor("The edited layer and the WISE settings appear here once the model has loaded and "
                            "its workspace is open.")

    # -- model ------------------------------------------------------------------------------------

    def _source_changed(self) -> None:
        custom = self.source.currentData() != "default"
        self.path.setEnabled(custom)
        self.browse.setEnabled(custom)

    def _browse(self) -> None:
        if self.source.currentData() == "gguf":
            path, _ = QFileDialog.getOpenFileName(self, "Choose a GGUF model", self.path.text(), "GGUF models (*.gguf)")
        else:
            path = QFileDialog.getExistingDirectory(self, "Choose a Hugging Face model folder", self.path.text())
        if path:
            self.path.setText(path)

    def _request_load(self) -> None:
        source = DEFAULT_MODEL if self.source.currentData() == "default" else self.path.text().strip()
        if source:
            self.load_requested.emit(source, self.device.currentText(), self.dtype.currentText())

    def show_source(self, source: str) -> None:
        if source == DEFAULT_MODEL:
            self.source.setCurrentIndex(0)
        else:
            self.source.setCurrentIndex(2 if source.lower().endswith(".gguf") else 1)
            self.path.setText(source)

    def show_progress(self, message: str, fraction: float | None) -> None:
        self.progress.setVisible(fraction is not None)
        if fraction is not None:
            self.progress.setValue(int(fraction * 100))
        self.progress_text.setText(message)

    def show_model(self, loaded: LoadedModel | None) -> None:
        if loaded is None:
            self.info.setText("No model loaded.")
            return
        dtype = str(loaded.dtype).replace("torch.", "")
        cached = " (from the converted cache)" if loaded.from_cache else ""
        self.info.setText(f"<b>{loaded.name}</b>{cached}<br>{format_parameter_count(loaded.n_parameters)}, "
                          f"{loaded.model_type}, {loaded.model.config.num_hidden_layers} layers<br>"
                          f"device {loaded.device}, {dtype}, loaded in {loaded.load_seconds:.1f} s")

    # -- layer and settings -----------------------------------------------------------------------

    @property
    def showing_settings(self) -> bool:
        return self.editor_pages.currentIndex() == 1

    def show_no_editor(self, note: str) -> None:
        self.waiting_note.setText(note)
        self.editor_pages.setCurrentIndex(0)

    def show_editor(self, settings: WiseSettings, n_layers: int, default: int, module_name: str, locked: bool) -> None:
        """The current editor's layer and settings; the layer is fixed once an edit is applied."""
        self.editor_pages.setCurrentIndex(1)
        self.settings_problem.hide()
        self._base_settings = settings
        self.layer.setRange(0, max(0, n_layers - 1))
        self.layer.setValue(settings.layer)
        self.layer.setEnabled(not locked)
        note = f"{module_name}; default for this model: {default}."
        if locked:
            note += " Fixed: edits are applied at this layer (start a new workspace to change it)."
        self.layer_note.setText(note)
        self.settings_form.set_settings(settings)

    def settings(self) -> WiseSettings:
        """The form's settings; SettingsError names a value the settings refuse."""
        return self._base_settings.replace(layer=self.layer.value(), **self.settings_form.values())

    def _request_settings(self) -> None:
        try:
            settings = self.settings()
        except SettingsError as exc:
            self.settings_problem.setText(f"These settings cannot be used: {exc} Nothing was changed.")
            self.settings_problem.show()
            return
        self.settings_problem.hide()
        self.settings_requested.emit(settings)

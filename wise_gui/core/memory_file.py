"""The side-memory file: the complete state of one editor, as safetensors tensors plus JSON metadata.

The same container holds the workspace's checkpoints: a full checkpoint *is* a memory file, and a
delta checkpoint holds what one applied edit changed (`state_delta`). No pickle anywhere: the tensors
are raw arrays, everything else is JSON in the safetensors metadata (whose values must be strings).

Format 2 (this version) stores the editor's state dict (`EditorState.state_dict`): per side memory the
int32 positions and the values of the entries where it differs from the original weight, its keys; or
MEMOIR's residual memory and each edit's mask; and the calibration. Metadata: format, format_version,
identity (model, config hash, module, shape, dtype, original weight hash), settings (WiseSettings JSON),
state (the state dict's metadata) and checksum: sha256 over the tensors and all other metadata, so a
truncated or altered file is refused. Format 1 files (a packed bit mask per memory) are still read.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

from wise_gui.core.errors import WiseGuiError
from wise_gui.core.files import write_safetensors_atomic
from wise_gui.core.identity import config_hash, update_with_tensor, weight_hash
from wise_gui.core.models import LoadedModel
from wise_gui.core.wise.editor import WiseEditor
from wise_gui.core.wise.settings import WiseSettings
from wise_gui.core.wise.state import StateDict, StateError

FORMAT_NAME = "wise-gui-memory"
DELTA_FORMAT_NAME = "wise-gui-delta"
FORMAT_VERSION = 2
STATE_PREFIX = "state."


class MemoryFileError(WiseGuiError):
    """A memory file cannot be used; the message says why, for the user."""


class MemoryFileNotFound(MemoryFileError):
    pass


class MemoryFileDamaged(MemoryFileError):
    """Truncated, altered, or not a memory file at all."""


class MemoryFileTooNew(MemoryFileError):
    """Written by a newer wise-gui in a format version this one does not know."""


class MemoryFileMismatch(MemoryFileError):
    """Made for another model, another layer, or another copy of the weights."""


# ----------------------------------------------------------------------------------------------
# Identity: what a memory file fits


@dataclass(frozen=True)
class Identity:
    model_name: str
    model_source: str
    config_hash: str
    module_name: str
    weight_shape: list[int]
    weight_dtype: str
    weight_hash: str  # sha256 of the edited module's original weight, raw bytes in its own dtype
    fingerprint: str  # editor.fingerprint(), which the workspace database records

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Identity:
        values = json.loads(text)
        if not isinstance(values, dict):
            raise TypeError("the identity is not a JSON object")
        identity = cls(**values)
        if not all(isinstance(getattr(identity, f.name), str) for f in dataclasses.fields(cls) if f.name != "weight_shape") \
                or not isinstance(identity.weight_shape, list) or not all(isinstance(n, int) for n in identity.weight_shape):
            raise TypeError("the identity has fields of the wrong type")
        return identity


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def editor_identity(editor: WiseEditor) -> Identity:
    weight = editor.layer.weight
    return Identity(
        model_name=editor.loaded.name, model_source=editor.loaded.source,
        config_hash=config_hash(editor.loaded.model.config), module_name=editor.module_name,
        weight_shape=list(weight.shape), weight_dtype=_dtype_name(weight.dtype), weight_hash=weight_hash(weight),
        fingerprint=editor.fingerprint(),
    )


def _refuse_config(mine: Identity, loaded: LoadedModel, where: str) -> None:
    theirs = config_hash(loaded.model.config)
    if mine.config_hash != theirs:
        raise MemoryFileMismatch(
            f"{where} was made for the model {mine.model_name!r} ({mine.model_source}, config hash "
            f"{mine.config_hash[:12]}), but the loaded model is {loaded.name!r} ({loaded.source}, config hash "
            f"{theirs[:12]}). Load the model the file was made for."
        )


def refuse_mismatch(mine: Identity, editor: WiseEditor, where: str) -> None:
    """Names the first thing that differs between the file's model and the editor's."""
    _refuse_config(mine, editor.loaded, where)
    theirs = editor_identity(editor)
    if mine.module_name != theirs.module_name:
        raise MemoryFileMismatch(
            f"{where} holds a side memory for the layer {mine.module_name}, but this editor edits "
            f"{theirs.module_name}."
        )
    if mine.weight_shape != theirs.weight_shape:
        raise MemoryFileMismatch(
            f"{where} holds a side memory of shape {mine.weight_shape} for {mine.module_name}, but that weight "
            f"has the shape {theirs.weight_shape} in this model."
        )
    if mine.weight_dtype != theirs.weight_dtype:
        raise MemoryFileMismatch(
            f"{where} was made with {mine.module_name} in {mine.weight_dtype}, but the loaded model has it in "
            f"{theirs.weight_dtype}: load the model with --dtype {mine.weight_dtype}."
        )
    if mine.weight_hash != theirs.weight_hash or mine.fingerprint != theirs.fingerprint:
        raise MemoryFileMismatch(
            f"{where} was made for {mine.model_name!r} ({mine.model_source}): the loaded model {theirs.model_name!r} "
            f"has the same configuration, but the original weight of {mine.module_name} differs (hash "
            f"{mine.weight_hash[:12]} in the file, {theirs.weight_hash[:12]} here). "
            "Load the model the file was made for."
        )


# ----------------------------------------------------------------------------------------------
# Encoding


def _checksum(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name]
        digest.update(json.dumps([name, _dtype_name(tensor.dtype), list(tensor.shape)]).encode())
        update_with_tensor(digest, tensor)
    others = {key: value for key, value in metadata.items() if key != "checksum"}
    digest.update(json.dumps(others, sort_keys=True).encode())
    return digest.hexdigest()


def encode(state: StateDict, metadata: dict[str, str], format_name: str = FORMAT_NAME
           ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """A state dict as the tensors and metadata of a file in this container, checksummed."""
    tensors = {STATE_PREFIX + name: t for name, t in state.tensors.items()}
    metadata = {"format": format_name, "format_version": str(FORMAT_VERSION), **metadata,
                "state": json.dumps(state.meta)}
    metadata["checksum"] = _checksum(tensors, metadata)
    return tensors, metadata


def memory_file_contents(identity: Identity, settings: WiseSettings, state: StateDict
                         ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    return encode(state, {"identity": identity.to_json(), "settings": settings.to_json()})


def write_memory_file(path: str | Path, identity: Identity, settings: WiseSettings, state: StateDict) -> None:
    write_safetensors_atomic(Path(path).expanduser(), *memory_file_contents(identity, settings, state))


def save_memory_file(editor: WiseEditor, path: str | Path) -> None:
    write_memory_file(path, editor_identity(editor), editor.settings, editor.state_dict())


def delta_contents(settings: WiseSettings, delta: StateDict, apply_order: int
                   ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """A delta checkpoint: what one applied edit changed (`state_delta`), and the settings after it."""
    return encode(delta, {"settings": settings.to_json(), "apply_order": str(apply_order)}, DELTA_FORMAT_NAME)


# ----------------------------------------------------------------------------------------------
# Decoding


@dataclass
class MemoryFile:
    """A verified memory file (format, version and checksum checked), not yet fitted to a model."""

    identity: Identity
    settings: WiseSettings
    state: StateDict
    format_version: int
    source: str  # "The memory file <path>", for messages

    @property
    def total_edits(self) -> int:
        return int(self.state.meta["total_edits"])

    @property
    def edit_log(self) -> list[tuple[str, str]]:
        return [(prompt, target) for prompt, target in self.state.meta["edit_log"]]

    def restore_into(self, editor: WiseEditor) -> None:
        """Replaces the editor's state and settings by the file's; refused when the file is for another model."""
        refuse_mismatch(self.identity, editor, self.source)
        previous = editor.settings
        try:
            editor.update_settings(self.settings)
            editor.load_state_dict(self.state)
        except StateError as exc:
            editor.update_settings(previous)
            raise MemoryFileDamaged(f"{self.source} is damaged: {exc}.") from None
        except BaseException:
            editor.update_settings(previous)
            raise

    def attach(self, loaded: LoadedModel, settings_override: WiseSettings | None = None) -> WiseEditor:
        """A new editor on `loaded` holding this memory (with `settings_override` instead of the file's settings)."""
        _refuse_config(self.identity, loaded, self.source)  # before the editor looks for the file's layer
        editor = WiseEditor(loaded, self.settings)
        try:
            self.restore_into(editor)
            if settings_override is not None:
                editor.update_settings(settings_override)
        except BaseException:
            editor.detach()
            raise
        return editor


def check_container(tensors: dict[str, torch.Tensor], metadata: dict[str, str], source: str,
                    format_name: str = FORMAT_NAME) -> int:
    """The format version, after the marker, the version and the checksum are checked."""
    if metadata.get("format") != format_name:
        raise MemoryFileDamaged(f"{source} is not a WISE {'memory' if format_name == FORMAT_NAME else 'checkpoint'} "
                                f"file (its metadata has no {format_name!r} marker).")
    try:
        version = int(metadata["format_version"])
    except (KeyError, ValueError):
        raise MemoryFileDamaged(f"{source} is damaged: its format version is missing or unreadable.") from None
    # Checked before the checksum: a newer format may checksum differently.
    if version > FORMAT_VERSION:
        raise MemoryFileTooNew(
            f"{source} has format version {version}, but this wise-gui reads versions up to {FORMAT_VERSION}: "
            "update wise-gui to load it."
        )
    if version < 1:
        raise MemoryFileDamaged(f"{source} is damaged: format version {version} does not exist.")
    if metadata.get("checksum") != _checksum(tensors, metadata):
        raise MemoryFileDamaged(f"{source} is damaged or was modified: its checksum does not match its content.")
    return version


def decode_state(tensors: dict[str, torch.Tensor], metadata: dict[str, str], source: str) -> StateDict:
    """The state dict of a checked format-2 container."""
    try:
        meta = json.loads(metadata["state"])
        if not isinstance(meta, dict):
            raise TypeError("the state is not a JSON object")
    except (KeyError, TypeError, ValueError, RecursionError) as exc:
        raise MemoryFileDamaged(f"{source} is damaged: unreadable state ({exc}).") from None
    stray = [name for name in tensors if not name.startswith(STATE_PREFIX)]
    if stray:
        raise MemoryFileDamaged(f"{source} is damaged: it holds tensors outside its state ({stray[0]}).")
    return StateDict({name[len(STATE_PREFIX):]: t for name, t in tensors.items()}, meta)


def parse(tensors: dict[str, torch.Tensor], metadata: dict[str, str], source: str) -> MemoryFile:
    version = check_container(tensors, metadata, source)
    try:
        identity = Identity.from_json(metadata["identity"])
        settings = WiseSettings.from_dict(json.loads(metadata["settings"]))
        state = decode_state(tensors, metadata, source) if version >= 2 else _state_from_v1(
            tensors, json.loads(metadata["state"]), identity)
    except MemoryFileError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise MemoryFileDamaged(f"{source} is damaged: unreadable metadata ({exc}).") from None
    return MemoryFile(identity, settings, state, version, source)


def _state_from_v1(tensors: dict[str, torch.Tensor], saved: dict, identity: Identity) -> StateDict:
    """A format-1 file's state: per memory a packed bit mask of its changed entries and their values."""
    numel = 1
    for size in identity.weight_shape:
        numel *= size
    shifts = torch.arange(7, -1, -1, dtype=torch.uint8)
    out: dict[str, torch.Tensor] = {}
    records = []
    count = len(saved["memories"])
    for i, record in enumerate(saved["memories"]):
        packed, values = tensors[f"memory.{i}.changed"], tensors[f"memory.{i}.values"]
        changed = ((packed.unsqueeze(-1) >> shifts) & 1).reshape(-1)[:numel].bool()
        if packed.numel() * 8 < numel or int(changed.sum()) != values.numel():
            raise ValueError("a side memory does not fit its own change mask")
        memory_id = int(saved["shards_started"]) if i == count - 1 else i + 1
        out[f"memory.{memory_id}.positions"] = changed.nonzero().squeeze(1).to(torch.int32)
        out[f"memory.{memory_id}.values"] = values
        records.append({"id": memory_id, "kind": record["kind"], "edit_ids": record["edit_ids"],
                        "edit_scores": record["edit_scores"], "mask_seed": record["mask_seed"]})
    meta = {"layout": "shards", "memories": records, "total_edits": saved["total_edits"],
            "shards_started": saved["shards_started"], "merge_events": saved["merge_events"],
            "edit_log": saved["edit_log"], "irrelevant_cursor": saved["irrelevant_cursor"],
            "templates": saved["context_templates"], "layer_scale": saved["layer_scale"]}
    return StateDict(out, meta)


def read_container(path: Path, source: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a safetensors file, every failure a MemoryFileDamaged."""
    try:
        with safe_open(path, framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except Exception as exc:  # safetensors reports truncation and bad headers with several exception types
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise MemoryFileDamaged(
            f"{source} is truncated or damaged: it is not a complete safetensors file ({reason})."
        ) from None
    return tensors, metadata


def read_memory_file(path: str | Path) -> MemoryFile:
    path = Path(path).expanduser()
    if not path.is_file():
        raise MemoryFileNotFound(f"No memory file at {path}.")
    source = f"The memory file {path}"
    return parse(*read_container(path, source), source)


def read_delta(path: str | Path) -> tuple[WiseSettings, StateDict, int]:
    """(settings, state delta, apply order) of a delta checkpoint, checked like a memory file."""
    path = Path(path)
    source = f"The checkpoint {path}"
    if not path.is_file():
        raise MemoryFileNotFound(f"No checkpoint at {path}.")
    tensors, metadata = read_container(path, source)
    check_container(tensors, metadata, source, DELTA_FORMAT_NAME)
    try:
        settings = WiseSettings.from_dict(json.loads(metadata["settings"]))
        order = int(metadata["apply_order"])
    except (KeyError, TypeError, ValueError, RecursionError) as exc:
        raise MemoryFileDamaged(f"{source} is damaged: unreadable metadata ({exc}).") from None
    return settings, decode_state(tensors, metadata, source), order


def apply_to_editor(editor: WiseEditor, path: str | Path) -> None:
    """Loads the memory file at `path` into an existing editor (its state and settings)."""
    read_memory_file(path).restore_into(editor)


def attach_memory_file(
    loaded: LoadedModel, path: str | Path, settings_override: WiseSettings | None = None
) -> WiseEditor:
    """The standalone loader: a model (wise_gui.core.models.load_model, or any LoadedModel) plus the file.

        loaded = load_model("path/to/model")
        editor = attach_memory_file(loaded, "facts.safetensors")
        print(editor.generate(["Who wrote Hamlet?"], form="chat")[0].text)
    """
    return read_memory_file(path).attach(loaded, settings_override)

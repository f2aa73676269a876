"""The side-memory file: the complete WISE state of one editor, as safetensors tensors plus JSON metadata.

The same format is the standalone memory file (`save_memory_file`, `wise-gui export`) and the store's
per-edit checkpoint, so a checkpoint *is* a memory file. No pickle anywhere: the tensors are raw arrays,
everything else is JSON in the safetensors metadata (whose values must be strings).

Tensors, per side memory i (merged ones, then full shards, then the current shard):

    memory.<i>.changed  uint8, bit mask of "this entry differs from the original weight" (bitwise),
                        packed eight to a byte, most significant bit first (as numpy.packbits)
    memory.<i>.values   the side weight's values at those entries, row-major, in the weight's dtype

Storing the changed entries rather than the difference W' - W keeps reload bit-exact (float subtraction
does not round-trip) at the same size: a shard only changes the entries of its gradient mask.

Metadata: format, format_version, identity (model, config hash, module, shape, dtype, original weight
hash), state (memories' kinds, edit ids, edit scores, mask seeds and ratios; counters, merge events,
edit log, irrelevant-sample cursor, context templates, layer scale), settings (WiseSettings JSON) and
checksum: sha256 over the tensors and all other metadata, so a truncated or altered file is refused.
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
from wise_gui.core.models import LoadedModel
from wise_gui.core.wise.editor import WiseEditor
from wise_gui.core.identity import config_hash, update_with_tensor, weight_hash
from wise_gui.core.wise.memory import SideMemory, WiseState
from wise_gui.core.wise.settings import WiseSettings

FORMAT_NAME = "wise-gui-memory"
FORMAT_VERSION = 1


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


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def editor_identity(editor: WiseEditor) -> Identity:
    weight = editor.layer.weight
    return Identity(
        model_name=editor.loaded.name, model_source=editor.loaded.source,
        config_hash=config_hash(editor.loaded.model.config), module_name=editor.module_name,
        weight_shape=list(weight.shape), weight_dtype=_dtype_name(weight.dtype), weight_hash=weight_hash(weight),
        fingerprint=editor.fingerprint(),
    )  # fmt: skip


def _refuse_config(mine: Identity, loaded: LoadedModel, where: str) -> None:
    theirs = config_hash(loaded.model.config)
    if mine.config_hash != theirs:
        raise MemoryFileMismatch(
            f"{where} was made for the model {mine.model_name!r} ({mine.model_source}, config hash "
            f"{mine.config_hash[:12]}), but the loaded model is {loaded.name!r} ({loaded.source}, config hash "
            f"{theirs[:12]}). Load the model the file was made for."
        )


def _refuse_mismatch(mine: Identity, editor: WiseEditor, where: str) -> None:
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
# Weights as changed entries


# Same-sized integer views, to compare float weights bit for bit (-0.0 vs 0.0, NaN payloads).
_INT_OF_SIZE = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
_BIT_VALUES = 2 ** torch.arange(7, -1, -1, dtype=torch.uint8)  # most significant bit first, as numpy.packbits


def _encode_weight(weight: torch.Tensor, base: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Where `weight` differs from `base` bit for bit, as a packed bit mask (uint8), and its values there."""
    as_int = _INT_OF_SIZE[weight.element_size()]
    flat = weight.detach().reshape(-1)
    changed = flat.view(as_int) != base.detach().reshape(-1).view(as_int)
    padded = torch.cat([changed, changed.new_zeros(-changed.numel() % 8)]).view(-1, 8)
    packed = (padded.to(torch.uint8) * _BIT_VALUES.to(padded.device)).sum(-1, dtype=torch.uint8)
    return packed, flat[changed]


def _decode_weight(packed: torch.Tensor, values: torch.Tensor, original: torch.Tensor, source: str) -> torch.Tensor:
    shifts = torch.arange(7, -1, -1, dtype=torch.uint8)
    changed = ((packed.unsqueeze(-1) >> shifts) & 1).reshape(-1)[: original.numel()].bool()
    if packed.numel() * 8 < original.numel() or int(changed.sum()) != values.numel() or values.dtype != original.dtype:
        raise MemoryFileDamaged(f"{source} is damaged: a side memory does not fit its own change mask.")
    weight = original.detach().clone()
    weight.view(-1)[changed.to(weight.device)] = values.to(weight.device)
    return weight


# ----------------------------------------------------------------------------------------------
# State <-> tensors and metadata


def _checksum(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name]
        digest.update(json.dumps([name, _dtype_name(tensor.dtype), list(tensor.shape)]).encode())
        update_with_tensor(digest, tensor)
    others = {key: value for key, value in metadata.items() if key != "checksum"}
    digest.update(json.dumps(others, sort_keys=True).encode())
    return digest.hexdigest()


def editor_state(editor: WiseEditor) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Everything needed to answer with, and to go on editing, the editor's side memory."""
    state, original = editor.state, editor.layer.weight
    memories = state.merged + state.saved + [state.shard]
    tensors: dict[str, torch.Tensor] = {}
    records = []
    for i, memory in enumerate(memories):
        packed, values = _encode_weight(memory.weight, original)
        tensors[f"memory.{i}.changed"], tensors[f"memory.{i}.values"] = packed.cpu(), values.cpu()
        records.append({
            "kind": memory.kind, "edit_ids": list(memory.edit_ids), "edit_scores": list(memory.edit_scores),
            "mask_seed": memory.mask_seed,
            "mask_ratio": editor.settings.mask_ratio if memory.mask_seed is not None else None,
        })  # fmt: skip
    saved_state = {
        "memories": records, "total_edits": state.total_edits, "shards_started": state.shards_started,
        "merge_events": list(state.merge_events), "edit_log": [list(pair) for pair in editor.edit_log],
        "irrelevant_cursor": editor.irrelevant_cursor, "context_templates": list(editor.context_templates),
        "layer_scale": editor.layer_scale,
    }  # fmt: skip
    metadata = {
        "format": FORMAT_NAME,
        "format_version": str(FORMAT_VERSION),
        "identity": json.dumps(dataclasses.asdict(editor_identity(editor))),
        "state": json.dumps(saved_state),
        "settings": editor.settings.to_json(),
    }
    metadata["checksum"] = _checksum(tensors, metadata)
    return tensors, metadata


@dataclass
class MemoryFile:
    """A verified memory file (format, version and checksum checked), not yet fitted to a model."""

    identity: Identity
    settings: WiseSettings
    state: dict
    tensors: dict[str, torch.Tensor]
    format_version: int
    source: str  # "The memory file <path>", for messages

    @property
    def total_edits(self) -> int:
        return self.state["total_edits"]

    @property
    def edit_log(self) -> list[tuple[str, str]]:
        return [(prompt, target) for prompt, target in self.state["edit_log"]]

    def restore_into(self, editor: WiseEditor) -> None:
        """Replaces the editor's state and settings by the file's; refused when the file is for another model."""
        _refuse_mismatch(self.identity, editor, self.source)
        original = editor.layer.weight
        memories = [
            SideMemory(
                weight=_decode_weight(self.tensors[f"memory.{i}.changed"], self.tensors[f"memory.{i}.values"],
                                      original, self.source),
                kind=record["kind"], edit_ids=list(record["edit_ids"]), edit_scores=list(record["edit_scores"]),
                mask_seed=record["mask_seed"],
            )  # fmt: skip
            for i, record in enumerate(self.state["memories"])
        ]
        for memory in memories:
            if memory.kind == "merged":
                memory.compact(original.detach())
        state = WiseState(
            shard=memories[-1],
            saved=[m for m in memories if m.kind == "saved"],
            merged=[m for m in memories if m.kind == "merged"],
            total_edits=self.state["total_edits"],
            shards_started=self.state["shards_started"],
            merge_events=list(self.state["merge_events"]),
        )
        editor.update_settings(self.settings)
        editor.restore((state, self.edit_log, self.state["irrelevant_cursor"]))
        editor.context_templates = self.state["context_templates"]
        editor.layer_scale = self.state["layer_scale"]

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


def _parse(tensors: dict[str, torch.Tensor], metadata: dict[str, str], source: str) -> MemoryFile:
    if metadata.get("format") != FORMAT_NAME:
        raise MemoryFileDamaged(f"{source} is not a WISE memory file (its metadata has no {FORMAT_NAME!r} marker).")
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
    if metadata.get("checksum") != _checksum(tensors, metadata):
        raise MemoryFileDamaged(f"{source} is damaged or was modified: its checksum does not match its content.")
    try:
        identity = Identity(**json.loads(metadata["identity"]))
        settings = WiseSettings.from_dict(json.loads(metadata["settings"]))
        state = json.loads(metadata["state"])
    except (KeyError, TypeError, ValueError) as exc:
        raise MemoryFileDamaged(f"{source} is damaged: unreadable metadata ({exc}).") from None
    return MemoryFile(identity, settings, state, tensors, version, source)


def load_editor_state(editor: WiseEditor, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """The inverse of `editor_state`, after checking format, checksum and model identity."""
    _parse(tensors, metadata, "The memory state").restore_into(editor)


# ----------------------------------------------------------------------------------------------
# Files


def save_memory_file(editor: WiseEditor, path: str | Path) -> None:
    tensors, metadata = editor_state(editor)
    write_safetensors_atomic(Path(path).expanduser(), tensors, metadata)


def read_memory_file(path: str | Path) -> MemoryFile:
    path = Path(path).expanduser()
    if not path.is_file():
        raise MemoryFileNotFound(f"No memory file at {path}.")
    source = f"The memory file {path}"
    try:
        with safe_open(path, framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except Exception as exc:  # safetensors reports truncation and bad headers with several exception types
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise MemoryFileDamaged(
            f"{source} is truncated or damaged: it is not a complete safetensors file ({reason})."
        ) from None
    return _parse(tensors, metadata, source)


def apply_to_editor(editor: WiseEditor, path: str | Path) -> None:
    """Loads the memory file at `path` into an existing editor (its state and settings)."""
    read_memory_file(path).restore_into(editor)


def attach_memory_file(
    loaded: LoadedModel, path: str | Path, settings_override: WiseSettings | None = None
) -> WiseEditor:
    """The standalone loader: a model (wise_gui.core.models.load_model, or any LoadedModel) plus the file.

        loaded = load_model("path/to/model")
        editor = attach_memory_file(loaded, "facts.safetensors")
        print(editor.generate(["Who wrote Hamlet?"]))
    """
    return read_memory_file(path).attach(loaded, settings_override)

"""The editor's whole state in one object, and its state dict: named tensors plus JSON metadata.

`EditorState` holds everything that applying edits changes or that an edit depends on: the memories,
the edit log, the irrelevant-sample cursor and the calibration (context templates, the layer's
activation scale, the mean question feature of unrelated text, and the key whitening when the settings
use it). Snapshot = `clone()`; the memory file and the workspace's checkpoints are `state_dict()` and
`load_state_dict()`.

Tensors are named by stable identities (a memory by the shard number it started as, a MEMOIR mask by its
edit), so two consecutive states share most names with the same tensor objects and `state_delta` is the
size of one edit, not of the whole state: a workspace writes one delta per applied edit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from wise_gui.core.wise.memoir import ResidualMemory
from wise_gui.core.wise.shards import KeyWhitening, RoutingRule, ShardMemories, SideMemory

# Same-sized integer views, to compare float tensors bit for bit (-0.0 vs 0.0, NaN payloads).
_INT_OF_SIZE = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


class StateError(ValueError):
    """A state dict that does not describe a state (missing or inconsistent parts)."""


@dataclass
class StateDict:
    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any]

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors.values())


@dataclass
class Calibration:
    """What the editor measures once on the model before the first edit."""

    templates: list[str]
    layer_scale: float  # mean ||act(W a)|| over tokens of unrelated text
    background: torch.Tensor | None  # [in] mean question feature of unrelated text (None: a format-1 file's)
    whitening: KeyWhitening | None = None  # measured when the settings compare keys whitened


@dataclass
class EditorState:
    memories: ShardMemories | ResidualMemory
    edit_log: list[tuple[str, str]] = field(default_factory=list)
    irrelevant_cursor: int = 0
    calibration: Calibration | None = None
    # Each finished memory's tensors and record as `state_dict` gives them, so that consecutive state
    # dicts share them (and `state_delta` compares them by identity) instead of exporting every memory again.
    _exported: dict[SideMemory, _ExportedMemory] = field(default_factory=dict, repr=False, compare=False)
    _exported_log: list[list[str]] = field(default_factory=list, repr=False, compare=False)  # the same for the log

    @property
    def total_edits(self) -> int:
        return self.memories.total_edits

    def clone(self) -> EditorState:
        return EditorState(self.memories.clone(), list(self.edit_log), self.irrelevant_cursor, self.calibration,
                           _exported=dict(self._exported), _exported_log=list(self._exported_log))

    def nbytes(self) -> int:
        return self.memories.nbytes()

    # ---- state dict -------------------------------------------------------------------------------

    def state_dict(self, original: torch.Tensor) -> StateDict:
        """Named tensors (on the CPU) and JSON-able metadata; `original` is the edited weight W."""
        tensors: dict[str, torch.Tensor] = {}
        # The edit log only grows: the rows of earlier edits are made once.
        self._exported_log.extend([list(pair) for pair in self.edit_log[len(self._exported_log):]])
        meta: dict[str, Any] = {"edit_log": list(self._exported_log), "irrelevant_cursor": self.irrelevant_cursor}
        if self.calibration is not None:
            meta["templates"] = list(self.calibration.templates)
            meta["layer_scale"] = self.calibration.layer_scale
            if self.calibration.background is not None:
                tensors["calibration.background"] = _on_cpu(self.calibration.background)
            if self.calibration.whitening is not None:
                tensors["calibration.whitening.directions"] = _on_cpu(self.calibration.whitening.directions)
                tensors["calibration.whitening.gains"] = _on_cpu(self.calibration.whitening.gains)
        memories = self.memories
        if isinstance(memories, ShardMemories):
            meta["layout"] = "shards"
            meta["total_edits"], meta["shards_started"] = memories.total_edits, memories.shards_started
            meta["merge_events"] = list(memories.merge_events)
            records = []
            exported: dict[SideMemory, _ExportedMemory] = {}
            for memory in memories.merged + memories.saved + [memories.shard]:
                entry = self._exported.get(memory)
                if entry is None or entry.record["kind"] != memory.kind:
                    entry = _ExportedMemory.of(memory, original)
                if memory.kind != "shard":  # finished memories never change in place: exported once
                    exported[memory] = entry
                tensors.update(entry.tensors)
                records.append(entry.record)
            self._exported = exported
            meta["memories"] = records
        else:
            meta["layout"] = "residual"
            meta["total_edits"], meta["k"] = memories.total_edits, memories.k
            meta["edit_scores"] = list(memories.edit_scores)
            tensors["residual"] = _on_cpu(memories.residual)
            tensors["permutation"] = _on_cpu(memories.permutation)
            for index, mask in enumerate(memories.masks):
                tensors[f"mask.{index}"] = _on_cpu(mask)
        return StateDict(tensors, meta)

    @classmethod
    def from_state_dict(cls, state: StateDict, original: torch.Tensor, rule: RoutingRule,
                        overlap_threshold: float, transposed: bool = False) -> EditorState:
        """The inverse of `state_dict`; raises StateError when parts are missing or do not fit W."""
        tensors, meta = state.tensors, state.meta
        try:
            calibration = None
            if "templates" in meta:
                background = tensors.get("calibration.background")
                calibration = Calibration(list(meta["templates"]), float(meta["layer_scale"]),
                                          background.to(original.device).float() if background is not None else None,
                                          _whitening(tensors, original, transposed))
            background = calibration.background if calibration is not None else None
            if meta["layout"] == "shards":
                memories = [_side_memory(record, tensors, original, transposed) for record in meta["memories"]]
                if not memories or memories[-1].kind != "shard":
                    raise StateError("the state has no shard being filled")
                layout = ShardMemories(
                    shard=_densified(memories[-1]), saved=[m for m in memories if m.kind == "saved"],
                    merged=[m for m in memories if m.kind == "merged"], total_edits=int(meta["total_edits"]),
                    shards_started=int(meta["shards_started"]), merge_events=[int(e) for e in meta["merge_events"]],
                    rule=rule, background=background)
            elif meta["layout"] == "residual":
                residual = _tensor(tensors, "residual", original.device)
                if residual.shape != original.shape or residual.dtype != original.dtype:
                    raise StateError("the residual memory does not fit the edited weight")
                count = int(meta["total_edits"])
                layout = ResidualMemory(
                    residual=residual.clone(), k=int(meta["k"]), permutation=_tensor(tensors, "permutation").long(),
                    overlap_threshold=overlap_threshold, background=background,
                    masks=[_tensor(tensors, f"mask.{i}").long() for i in range(count)],
                    edit_scores=[float(s) for s in meta["edit_scores"]], total_edits=count)
            else:
                raise StateError(f"unknown memory layout {meta['layout']!r}")
            log = [(str(prompt), str(target)) for prompt, target in meta["edit_log"]]
            return cls(layout, log, int(meta["irrelevant_cursor"]), calibration)
        except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as exc:
            if isinstance(exc, StateError):
                raise
            raise StateError(f"the state is incomplete or inconsistent ({type(exc).__name__}: {exc})") from None


def _whitening(tensors: dict[str, torch.Tensor], original: torch.Tensor, transposed: bool) -> KeyWhitening | None:
    if "calibration.whitening.directions" not in tensors:
        return None
    directions = _tensor(tensors, "calibration.whitening.directions", original.device).float()
    gains = _tensor(tensors, "calibration.whitening.gains", original.device).float()
    inputs = original.shape[0] if transposed else original.shape[1]
    if directions.dim() != 2 or directions.shape[0] != inputs or gains.shape != (directions.shape[1],):
        raise StateError("the key whitening does not fit the edited weight's inputs")
    return KeyWhitening(directions, gains)


@dataclass(frozen=True)
class _ExportedMemory:
    tensors: dict[str, torch.Tensor]  # on the CPU, detached
    record: dict[str, Any]

    @classmethod
    def of(cls, memory: SideMemory, original: torch.Tensor) -> _ExportedMemory:
        name = f"memory.{memory.memory_id}"
        tensors = {}
        if memory.factors is not None:
            tensors[f"{name}.u"], tensors[f"{name}.v"] = memory.factors
        elif memory.columns is not None:
            tensors[f"{name}.inputs"], tensors[f"{name}.change"] = memory.columns
        else:
            positions, values = (memory.positions, memory.values) if memory.is_compact else \
                changed_entries(memory.weight, original)
            tensors[f"{name}.positions"], tensors[f"{name}.values"] = positions, values
        if memory.keys is not None:
            tensors[f"{name}.keys"] = memory.keys
        record = {"id": memory.memory_id, "kind": memory.kind, "edit_ids": list(memory.edit_ids),
                  "edit_scores": list(memory.edit_scores), "mask_seed": memory.mask_seed}
        return cls({key: _on_cpu(t) for key, t in tensors.items()}, record)


def _on_cpu(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor itself when it is already a plain CPU tensor: consecutive state dicts then share it."""
    return tensor if tensor.device.type == "cpu" and not tensor.requires_grad else tensor.detach().cpu()


def _tensor(tensors: dict[str, torch.Tensor], name: str, device=None) -> torch.Tensor:
    if name not in tensors:
        raise StateError(f"the state has no tensor {name!r}")
    tensor = tensors[name]
    return tensor.to(device) if device is not None else tensor


def _side_memory(record: dict, tensors: dict[str, torch.Tensor], original: torch.Tensor,
                 transposed: bool) -> SideMemory:
    name = f"memory.{int(record['id'])}"
    keys = tensors.get(f"{name}.keys")
    memory = SideMemory(original, str(record["kind"]), int(record["id"]), [int(i) for i in record["edit_ids"]],
                        [float(s) for s in record["edit_scores"]], keys.to(original.device).float() if keys is not None else None,
                        None if record["mask_seed"] is None else int(record["mask_seed"]))
    if f"{name}.inputs" in tensors:
        inputs, change = _tensor(tensors, f"{name}.inputs", original.device), _tensor(tensors, f"{name}.change", original.device)
        width, outputs = (original.shape[0], original.shape[1]) if transposed else (original.shape[1], original.shape[0])
        if inputs.dim() != 1 or change.shape != (outputs, inputs.numel()) or (
                inputs.numel() and (int(inputs.min()) < 0 or int(inputs.max()) >= width)):
            raise StateError(f"{name} does not fit the edited weight")
        memory.set_columns(original.detach(), inputs.long(), change, transposed)
        return memory
    if f"{name}.u" in tensors:
        u, v = _tensor(tensors, f"{name}.u", original.device), _tensor(tensors, f"{name}.v", original.device)
        outputs, inputs = (original.shape[1], original.shape[0]) if transposed else original.shape
        if u.dim() != 2 or v.dim() != 2 or u.shape[0] != outputs or v.shape[0] != inputs or u.shape[1] != v.shape[1]:
            raise StateError(f"{name} does not fit the edited weight")
        memory.set_factors(original.detach(), u.float(), v.float(), transposed)
        return memory
    positions = _tensor(tensors, f"{name}.positions", original.device)
    values = _tensor(tensors, f"{name}.values", original.device)
    if positions.dim() != 1 or values.shape != positions.shape or values.dtype != original.dtype:
        raise StateError(f"{name} does not fit the edited weight")
    if positions.numel() and (int(positions.min()) < 0 or int(positions.max()) >= original.numel()):
        raise StateError(f"{name} has entries outside the edited weight")
    memory.set_entries(original.detach(), positions.to(torch.int32), values)
    return memory


def _densified(memory: SideMemory) -> SideMemory:
    """The shard being filled is trained in place: it is kept dense."""
    memory.weight = memory.weight
    return memory


def changed_entries(weight: torch.Tensor, base: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(int32 flat positions, values) where `weight` differs from `base` bit for bit."""
    as_int = _INT_OF_SIZE[weight.element_size()]
    flat = weight.detach().reshape(-1)
    changed = (flat.view(as_int) != base.detach().reshape(-1).view(as_int)).nonzero().squeeze(1)
    return changed.to(torch.int32).cpu(), flat[changed].clone().cpu()


# ----------------------------------------------------------------------------------------------
# Deltas between two state dicts


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    as_int = _INT_OF_SIZE[a.element_size()]
    return bool(torch.equal(a.reshape(-1).view(as_int), b.reshape(-1).view(as_int)))


def state_delta(old: StateDict, new: StateDict) -> StateDict:
    """What turns `old` into `new`: new and replaced tensors whole, a tensor changed in a few entries
    as those entries, removed names, and per metadata key either the new value or (a list that grew)
    the kept prefix length and the new items."""
    tensors: dict[str, torch.Tensor] = {}
    patched, replaced = [], []
    for name, tensor in new.tensors.items():
        before = old.tensors.get(name)
        if before is tensor:  # shared by consecutive state dicts: the usual case, decided without a call
            continue
        if before is not None and _same(before, tensor):
            continue
        if before is not None and before.shape == tensor.shape and before.dtype == tensor.dtype:
            positions, values = changed_entries(tensor, before)
            if 2 * positions.numel() < tensor.numel():
                tensors[f"patch.{name}.positions"], tensors[f"patch.{name}.values"] = positions, values
                patched.append(name)
                continue
        tensors[f"set.{name}"] = tensor
        replaced.append(name)
    meta_changes = {}
    for key, value in new.meta.items():
        before = old.meta.get(key, _MISSING)
        if before == value:
            continue
        if isinstance(value, list) and isinstance(before, list):
            keep = len(before) if value[: len(before)] == before else 0  # a list that only grew: the usual case
            while keep < min(len(before), len(value)) and before[keep] == value[keep]:
                keep += 1
            meta_changes[key] = {"keep": keep, "append": value[keep:]}
        else:
            meta_changes[key] = {"set": value}
    meta = {"patched": patched, "replaced": replaced, "removed": sorted(set(old.tensors) - set(new.tensors)),
            "meta": meta_changes, "removed_meta": sorted(set(old.meta) - set(new.meta))}
    return StateDict(tensors, meta)


_MISSING = object()


def apply_state_delta(state: StateDict, delta: StateDict) -> StateDict:
    """`state` with `delta` applied (a new StateDict; `state`'s tensors are not changed)."""
    try:
        tensors = dict(state.tensors)
        for name in delta.meta["removed"]:
            tensors.pop(name)
        for name in delta.meta["replaced"]:
            tensors[name] = delta.tensors[f"set.{name}"]
        for name in delta.meta["patched"]:
            patched = tensors[name].clone()
            positions = delta.tensors[f"patch.{name}.positions"].long()
            values = delta.tensors[f"patch.{name}.values"]
            if positions.numel() and (int(positions.min()) < 0 or int(positions.max()) >= patched.numel()):
                raise StateError(f"a delta patches {name} outside its entries")
            patched.view(-1)[positions] = values.to(patched.dtype)
            tensors[name] = patched
        meta = {k: v for k, v in state.meta.items() if k not in set(delta.meta["removed_meta"])}
        for key, change in delta.meta["meta"].items():
            if "set" in change:
                meta[key] = change["set"]
            else:
                meta[key] = list(meta.get(key, []))[: int(change["keep"])] + list(change["append"])
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
        if isinstance(exc, StateError):
            raise
        raise StateError(f"a delta does not fit the state it follows ({type(exc).__name__}: {exc})") from None
    return StateDict(tensors, meta)

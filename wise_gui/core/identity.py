"""Hashes that identify a base model and the module WISE edits: a side memory only fits that module."""

from __future__ import annotations

import hashlib
import json

import torch

# Keys that change with how a model was loaded or saved, not with what the model is.
_VOLATILE_CONFIG_KEYS = ("_name_or_path", "transformers_version", "dtype", "torch_dtype", "quantization_config")


def update_with_tensor(digest, tensor: torch.Tensor) -> None:
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    digest.update(flat.view(torch.uint8).numpy().data)


def config_hash(config) -> str:
    values = config.to_dict()
    for volatile in _VOLATILE_CONFIG_KEYS:
        values.pop(volatile, None)
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()


def weight_hash(weight: torch.Tensor) -> str:
    digest = hashlib.sha256()
    update_with_tensor(digest, weight)
    return digest.hexdigest()


def model_fingerprint(config, module_name: str, weight: torch.Tensor) -> str:
    """One hash of the config, the edited module's name and its original weight."""
    parts = (config_hash(config), module_name, weight_hash(weight))
    return hashlib.sha256("|".join(parts).encode()).hexdigest()

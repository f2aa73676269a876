"""Where the parts WISE needs live in each supported model family."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from transformers.activations import ACT2FN

from wise_gui.core.errors import WiseGuiError

# family -> (decoder layers, pre-MLP norm in a layer, down projection in a layer, final norm)
_LAYOUTS = {
    "llama": ("model.layers", "post_attention_layernorm", "mlp.down_proj", "model.norm"),
    "gpt2": ("transformer.h", "ln_2", "mlp.c_proj", "transformer.ln_f"),
}
_FAMILY = {"llama": "llama", "qwen2": "llama", "mistral": "llama", "qwen3": "llama", "gpt2": "gpt2"}


class UnsupportedModelError(WiseGuiError):
    pass


def _get(root: nn.Module, dotted: str) -> nn.Module:
    module = root
    for part in dotted.split("."):
        module = getattr(module, part)
    return module


@dataclass
class Architecture:
    """The handles one WISE editor needs on a loaded causal LM."""

    model: nn.Module
    family: str
    layers: nn.ModuleList
    layer_index: int
    layers_path: str
    down_path: str
    pre_mlp_norm: nn.Module
    final_norm: nn.Module
    lm_head: nn.Module
    act_fn: object
    transposed: bool
    _head_copies: dict = field(default_factory=dict, repr=False)  # dtype -> the frozen LM head's weight in it

    @classmethod
    def of(cls, model: nn.Module, layer_index: int) -> Architecture:
        model_type = model.config.model_type
        family = _FAMILY.get(model_type)
        if family is None:
            raise UnsupportedModelError(
                f"WISE editing supports the Llama, Qwen2, Mistral and GPT-2 families; this model is {model_type!r}."
            )
        layers_path, norm_name, down_name, final_norm_path = _LAYOUTS[family]
        layers = _get(model, layers_path)
        if not 0 <= layer_index < len(layers):
            raise WiseGuiError(f"Layer {layer_index} does not exist: the model has layers 0..{len(layers) - 1}.")
        layer = layers[layer_index]
        activation = getattr(model.config, "hidden_act", None) or model.config.activation_function
        return cls(
            model=model,
            family=family,
            layers=layers,
            layer_index=layer_index,
            layers_path=layers_path,
            down_path=down_name,
            pre_mlp_norm=_get(layer, norm_name),
            final_norm=_get(model, final_norm_path),
            lm_head=model.get_output_embeddings(),
            act_fn=ACT2FN[activation],
            transposed=family == "gpt2",
        )

    @property
    def module_name(self) -> str:
        return f"{self.layers_path}.{self.layer_index}.{self.down_path}"

    def down_projection(self) -> nn.Module:
        return _get(self.layers[self.layer_index], self.down_path)

    def replace_down_projection(self, new: nn.Module) -> None:
        parent_path, _, name = self.down_path.rpartition(".")
        setattr(_get(self.layers[self.layer_index], parent_path), name, new)

    def head_weight(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The LM head's weight, or a copy of it in `dtype` made once (the head is frozen)."""
        weight = self.lm_head.weight
        if dtype is None or dtype == weight.dtype:
            return weight
        if dtype not in self._head_copies:
            self._head_copies[dtype] = weight.detach().to(dtype)
        return self._head_copies[dtype]

    def upper_layers(self) -> list[nn.Module]:
        return list(self.layers[self.layer_index + 1:])

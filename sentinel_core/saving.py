"""Pruned checkpoints: an AdaptiveCausalLM or AdaptiveSeq2SeqLM saved as a folder and loaded back bit for bit.

The folder:
  sentinel.json            the manifest: format version, model_type, the spec (DecoderSpec, or Seq2SeqSpec with
                           "architecture": "seq2seq"), pruned heads, files
  sentinel.safetensors     the canonical state dict: gates and each layer's head_ids / kv_of_head included,
                           which is all it takes to rebuild the pruned shapes
  config.json              the HF config (generation defaults, tokenizer-side ids); generation_config.json too
                           when the model has one

The weights are not called model.safetensors: transformers would read canonical names as an HF checkpoint
with every key missing and initialise it at random; under another name it refuses the folder instead.
The spec is saved rather than re-derived from config.json, so a newer transformers (or converter) cannot
change what a saved model computes.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .errors import CheckpointError
from .spec import DecoderSpec, Seq2SeqSpec

MANIFEST = "sentinel.json"
WEIGHTS = "sentinel.safetensors"
FORMAT = "sentinel-adaptive"
FORMAT_VERSION = 1  # raise when an older loader could not read the folder right
HF_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def is_saved_model(path) -> bool:
    return Path(str(path)).is_dir() and (Path(str(path)) / MANIFEST).is_file()


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sentinel")
    except PackageNotFoundError:
        return "unknown"


def save_pretrained(model, folder) -> None:
    """Write `model` (an AdaptiveCausalLM, pruned and gated or not) to `folder`; see the module docstring."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise CheckpointError(f"{folder} is a file: save the model into a new or empty folder")
    if not is_saved_model(folder) and any((folder / name).exists() for name in HF_WEIGHTS):
        raise CheckpointError(f"{folder} holds a Hugging Face checkpoint: save the adaptive model into a new or "
                              f"empty folder, so the two are never mixed")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MANIFEST).unlink(missing_ok=True)  # written last: a save cut short leaves no loadable half
    state = model.state_dict()
    if model.spec.tie_embeddings:
        del state["lm_head.weight"]  # embed.weight itself (safetensors refuses shared tensors); tied again on load
    save_file({k: v.detach().contiguous() for k, v in state.items()}, folder / WEIGHTS, metadata={"format": "pt"})
    files = [WEIGHTS]
    if model.config is not None:
        model.config.save_pretrained(folder)
        files.append("config.json")
    if model.generation_config is not None:
        model.generation_config.save_pretrained(folder)
        files.append("generation_config.json")
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "sentinel_version": _version(),
                "model_type": model.spec.family, "dtype": str(model.dtype).removeprefix("torch."),
                "pruned_heads": _json_keys(model.pruned_heads),
                "files": files, "spec": dataclasses.asdict(model.spec)}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def _fix(folder: Path) -> str:
    return f"re-save it with model.save_pretrained({str(folder)!r}), or copy the whole folder again"


def read_manifest(folder: Path) -> dict:
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{folder / MANIFEST} is unreadable ({exc}): {_fix(folder)}") from exc
    shape = {"format": str, "format_version": int, "spec": dict, "pruned_heads": dict, "files": list}
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or not all(
            isinstance(manifest.get(key), kind) for key, kind in shape.items()):
        raise CheckpointError(f"{folder / MANIFEST} is not a Sentinel manifest (format {FORMAT!r}, an integer "
                              f"format_version, spec, pruned_heads, files): {_fix(folder)}")
    version = manifest["format_version"]
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{folder} was saved in Sentinel checkpoint format {version} (by sentinel "
                              f"{manifest.get('sentinel_version', '?')}); this sentinel ({_version()}) reads format "
                              f"{FORMAT_VERSION} at most: upgrade sentinel to load it")
    for name in [WEIGHTS, *manifest["files"]]:
        if not (folder / name).is_file():
            raise CheckpointError(f"{folder} lacks {name}, which {MANIFEST} lists: {_fix(folder)}")
    return manifest


def _json_keys(value):
    """pruned_heads as JSON spells it: every key a string, at any depth ({kind: {layer: heads}} too)."""
    return {str(k): _json_keys(v) for k, v in value.items()} if isinstance(value, dict) else value


def _spec(manifest: dict, folder: Path) -> DecoderSpec | Seq2SeqSpec:
    saved = dict(manifest["spec"])
    spec_class = Seq2SeqSpec if saved.pop("architecture", None) == "seq2seq" else DecoderSpec
    if spec_class is DecoderSpec and not {"hf_separate_qkv", "hf_separate_gate_up"} <= set(saved) and \
            saved.get("family"):
        # Saved before the spec said which fused matrices HF multiplies apart: the family's rules say it.
        from .convert import hf_separate_from_rules

        saved = {**hf_separate_from_rules(saved["family"], DecoderSpec(**{k: tuple(v) if isinstance(v, list) else v
                                                                        for k, v in saved.items()})), **saved}
    unknown = sorted(set(saved) - {f.name for f in dataclasses.fields(spec_class) if f.init})
    if unknown:  # a field this decoder does not implement: running without it would compute something else
        raise CheckpointError(f"{folder}: the saved spec has fields this sentinel ({_version()}) does not know "
                              f"({', '.join(unknown)}): upgrade sentinel to load it")
    try:
        # JSON has no tuples: the spec's tuple fields (rotary frequencies, sliding layers) come back as lists.
        return spec_class(**{k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()})
    except (TypeError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"{folder / MANIFEST}: the saved spec is invalid ({exc}): {_fix(folder)}") from exc


def saved_spec(folder) -> DecoderSpec | Seq2SeqSpec:
    """The spec a saved folder loads with (pruned heads included), read from its manifest alone."""
    folder = Path(folder)
    return _spec(read_manifest(folder), folder)


# The fields that say what the architecture is: a manifest edited by hand (or a config.json swapped in beside it)
# must not load as a model that silently differs from its own config.
ARCHITECTURE_FIELDS = ("family", "vocab_size", "hidden_size", "num_layers", "num_heads", "num_kv_heads", "head_dim",
                       "intermediate_size", "norm", "norm_eps", "positions", "mlp", "activation")
SEQ2SEQ_ARCHITECTURE_FIELDS = ("family", "vocab_size", "hidden_size", "head_dim", "encoder_layers", "decoder_layers",
                               "encoder_heads", "decoder_heads", "encoder_ffn", "decoder_ffn", "norm", "norm_eps",
                               "pre_norm", "positions", "activation", "gated_mlp")


def _agrees_with_config(spec: DecoderSpec, config, folder: Path) -> None:
    from .families import FAMILIES

    if config.model_type not in FAMILIES:
        raise CheckpointError(f"{folder}: config.json names model_type {config.model_type!r}, but {MANIFEST} a "
                              f"{spec.family} decoder: {_fix(folder)}")
    expected = FAMILIES[config.model_type].to_spec(config)
    fields = SEQ2SEQ_ARCHITECTURE_FIELDS if isinstance(spec, Seq2SeqSpec) else ARCHITECTURE_FIELDS
    if type(expected) is not type(spec):
        raise CheckpointError(f"{folder}: config.json names model_type {config.model_type!r}, but {MANIFEST} a "
                              f"{spec.family} model: {_fix(folder)}")
    wrong = [f"{name} {getattr(spec, name)!r} where config.json gives {getattr(expected, name)!r}"
             for name in fields if getattr(spec, name) != getattr(expected, name)]
    if wrong:
        raise CheckpointError(f"{folder}: {MANIFEST} disagrees with config.json ({'; '.join(wrong[:3])}): {_fix(folder)}")


def load_saved(cls, folder, device="cpu", dtype: torch.dtype | None = None):
    """The model `save_pretrained` wrote, exactly: built on the meta device, then the saved tensors assigned.
    dtype None keeps the saved dtype; the rotary frequencies are rebuilt in fp32 from the spec, as on conversion."""
    from transformers import AutoConfig, GenerationConfig

    folder = Path(folder)
    manifest = read_manifest(folder)
    spec = _spec(manifest, folder)
    device = torch.device("cpu" if device is None else device)
    try:
        state = load_file(folder / WEIGHTS, device=str(device))
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error type for a corrupt file
        raise CheckpointError(f"{folder / WEIGHTS} is unreadable ({exc}): {_fix(folder)}") from exc
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    config = AutoConfig.from_pretrained(folder) if (folder / "config.json").is_file() else None
    if config is not None:
        _agrees_with_config(spec, config, folder)
    generation = GenerationConfig.from_pretrained(folder) if (folder / "generation_config.json").is_file() else None
    with torch.device("meta"):
        model = cls(spec, config=config, generation_config=generation)
    model.init_buffers(device)  # head_ids first: load_state_dict prunes to the saved head_ids, then assigns
    result = model.load_state_dict(state, strict=False, assign=True)
    missing = set(result.missing_keys) - ({"lm_head.weight"} if spec.tie_embeddings else set())
    if missing or result.unexpected_keys:
        raise CheckpointError(f"{folder / WEIGHTS} does not fit its spec (missing: {sorted(missing)[:3]}, "
                              f"unexpected: {sorted(result.unexpected_keys)[:3]}): {_fix(folder)}")
    model.tie_weights()
    if _json_keys(model.pruned_heads) != manifest["pruned_heads"]:
        raise CheckpointError(f"{folder}: the weights' pruned heads {model.pruned_heads} are not the manifest's "
                              f"{manifest['pruned_heads']}: {_fix(folder)}")
    return model.eval()

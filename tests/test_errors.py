"""Every bad input gets one clear error that names the fix; converters are loud about keys."""

import dataclasses
import json
import re

import pytest
import torch
from huggingface_hub.errors import GatedRepoError

import sentinel_core.loader as loader
from sentinel_core import (CheckpointError, GatedModelError, ModelNotFoundError, UnsupportedConfigError,
                           UnsupportedModelError, load_adaptive_model, load_baseline_model)
from sentinel_core.families import FAMILIES, Rule
from sentinel_core.synthetic import make_synthetic_checkpoint
from variants import _rope, variants


def one_line(exc) -> str:
    text = str(exc.value)
    assert "\n" not in text, text
    return text


def test_unknown_model_offline_names_cache_and_offline_switch():
    with pytest.raises(ModelNotFoundError) as exc:
        load_adaptive_model("no-such-org/no-such-model")
    text = one_line(exc)
    assert "HF_HUB_OFFLINE" in text and "cache" in text and "no-such-org/no-such-model" in text


def test_missing_local_folder():
    with pytest.raises(ModelNotFoundError, match="check the path"):
        load_baseline_model("/nonexistent/folder/model")


def test_gated_repo_names_token(monkeypatch):
    def gated(*args, **kwargs):
        # What the hub client raises for a gated repo without a token (built without an HTTP response).
        cause = GatedRepoError.__new__(GatedRepoError)
        Exception.__init__(cause, "Access to model meta-llama/Llama-2-7b-hf is restricted")
        raise OSError("gated") from cause

    monkeypatch.setattr(loader.AutoConfig, "from_pretrained", gated)
    with pytest.raises(GatedModelError) as exc:
        load_adaptive_model("meta-llama/Llama-2-7b-hf")
    assert "HF_TOKEN" in one_line(exc)


def test_model_without_attention_heads_is_refused_naming_the_families(tmp_path):
    """No converter, and nothing the generic gated wrapper could gate (Mamba has no attention)."""
    from transformers import MambaConfig

    make_synthetic_checkpoint(MambaConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, state_size=4,
                                          bos_token_id=1, eos_token_id=2), tmp_path)
    with pytest.raises(UnsupportedModelError) as exc:
        load_adaptive_model(tmp_path)
    text = one_line(exc)
    assert "'mamba'" in text and "no attention output projection" in text
    for family in ("gpt2", "opt", "gpt_neox", "bloom", "llama"):
        assert family in text


def test_model_type_without_a_causal_lm_class_is_refused(tmp_path):
    from transformers import DistilBertConfig

    DistilBertConfig(vocab_size=64, dim=32, n_layers=1, n_heads=2, hidden_dim=64).save_pretrained(tmp_path)
    with pytest.raises(UnsupportedModelError) as exc:
        load_adaptive_model(tmp_path)
    assert "'distilbert'" in one_line(exc) and "no causal LM class" in one_line(exc)


def test_an_encoder_decoder_without_a_converter_is_refused_not_cut_to_its_decoder(tmp_path):
    from transformers import PegasusConfig  # transformers has PegasusForCausalLM: the decoder alone

    PegasusConfig(vocab_size=64, d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                  decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64).save_pretrained(tmp_path)
    with pytest.raises(UnsupportedModelError) as exc:
        load_adaptive_model(tmp_path)
    assert "'pegasus' is an encoder-decoder without a converter" in one_line(exc) and "t5" in one_line(exc)


def test_model_type_unknown_to_transformers_is_one_line(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "no_such_architecture"}))
    with pytest.raises(CheckpointError) as exc:
        load_adaptive_model(tmp_path)
    assert "no_such_architecture" in one_line(exc)


def test_unsupported_rope_type_is_named(tmp_path, monkeypatch):
    from transformers import LlamaConfig

    import sentinel_core.families as families

    # Every rope type transformers 5.24 gives Llama is supported now: take one off the list to see the refusal.
    monkeypatch.setattr(families, "SUPPORTED_ROPE_TYPES", ("default",))
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, **_rope(10000.0, rope_type="dynamic", factor=2.0))
    make_synthetic_checkpoint(cfg, tmp_path)
    with pytest.raises(UnsupportedConfigError) as exc:
        load_adaptive_model(tmp_path)
    assert "'dynamic'" in one_line(exc)


def test_cross_attention_flag_is_refused(tmp_path):
    from transformers import GPT2Config

    make_synthetic_checkpoint(GPT2Config(vocab_size=64, n_embd=32, n_layer=1, n_head=2, n_positions=32,
                                         add_cross_attention=True), tmp_path)
    with pytest.raises((UnsupportedConfigError, CheckpointError)) as exc:
        load_adaptive_model(tmp_path)
    assert "cross" in one_line(exc)


def test_truncated_checkpoint_is_reported_as_corrupt(tmp_path):
    make_synthetic_checkpoint(variants()["gpt2"], tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(CheckpointError) as exc:
        load_baseline_model(tmp_path)
    assert "re-download" in one_line(exc)


def test_checkpoint_missing_a_tensor_is_refused_not_left_random(tmp_path):
    from safetensors.torch import load_file, save_file

    make_synthetic_checkpoint(variants()["llama-gqa"], tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    del weights["model.layers.1.self_attn.k_proj.weight"]
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError) as exc:
        load_adaptive_model(tmp_path)
    assert "k_proj" in one_line(exc)


def test_corrupt_config_json(tmp_path):
    make_synthetic_checkpoint(variants()["gpt2"], tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError):
        load_adaptive_model(tmp_path)


def _with_rules(monkeypatch, family: str, edit):
    original = FAMILIES[family]
    monkeypatch.setitem(FAMILIES, family, dataclasses.replace(original, rules=lambda s: edit(original.rules(s))))


def test_converter_names_an_unused_hf_parameter(monkeypatch, synthetic_folders):
    hf = load_baseline_model(synthetic_folders("gpt2"))
    _with_rules(monkeypatch, "gpt2", lambda rules: [r for r in rules if r.target != "layers.1.mlp.down.bias"])
    with pytest.raises(CheckpointError, match=r"transformer\.h\.1\.mlp\.c_proj\.bias"):
        load_adaptive_model("x", baseline_model=hf)


def test_converter_names_a_missing_hf_parameter(monkeypatch, synthetic_folders):
    hf = load_baseline_model(synthetic_folders("gpt2"))
    _with_rules(monkeypatch, "gpt2", lambda rules: [
        Rule(r.target, ("transformer.h.0.attn.q_missing.weight",)) if r.target == "layers.0.attn.qkv.weight" else r
        for r in rules])
    with pytest.raises(CheckpointError, match="q_missing"):
        load_adaptive_model("x", baseline_model=hf)


def test_a_checkpoint_with_its_own_code_names_the_flag_that_allows_it(tmp_path):
    from sentinel_core.errors import RemoteCodeError

    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "custom_remote", "auto_map": {"AutoConfig": "configuration_x.XConfig",
                                                     "AutoModelForCausalLM": "modeling_x.XModel"}}))
    with pytest.raises(RemoteCodeError, match="pass --trust_remote_code") as refused:
        load_adaptive_model(str(tmp_path))
    # the API way it names is one load_adaptive_model takes
    assert "load_adaptive_model(name, trust_remote_code=True)" in str(refused.value)
    import inspect
    assert "trust_remote_code" in inspect.signature(load_adaptive_model).parameters


def test_trust_remote_code_is_off_unless_asked(monkeypatch):
    seen = {}

    def fake(name, **kwargs):
        seen.update(kwargs)
        raise OSError("stop here")

    monkeypatch.setattr(loader.AutoConfig, "from_pretrained", fake)  # the config is read first: which Auto class
    monkeypatch.setattr(loader.AutoModelForCausalLM, "from_pretrained", fake)
    with pytest.raises(OSError):
        load_baseline_model("whatever-model")
    assert seen["trust_remote_code"] is False


@pytest.mark.parametrize("dtype, says", [("float17", "unknown dtype 'float17'"), (torch.int8, "torch.int8 cannot hold"),
                                         (torch.bool, "cannot hold"), (torch.float8_e4m3fn, "cannot hold"),
                                         (16, "unknown dtype 16")])
def test_a_dtype_no_model_runs_in_is_one_sentinel_error(synthetic_folders, dtype, says):
    from sentinel_core.errors import DtypeError

    with pytest.raises(DtypeError, match=re.escape(says)):
        load_adaptive_model(str(synthetic_folders("gpt2")), dtype=dtype)
    with pytest.raises(DtypeError, match=re.escape(says)):
        load_baseline_model(str(synthetic_folders("gpt2")), dtype=dtype)


@pytest.mark.parametrize("field, value", [("intermediate_size", 77), ("vocab_size", 77), ("family", "llama"), ("norm_eps", 1e-3)])
def test_a_manifest_that_disagrees_with_config_json_is_refused(synthetic_folders, tmp_path, field, value):
    from sentinel_core.errors import CheckpointError

    load_adaptive_model(str(synthetic_folders("gpt2"))).save_pretrained(tmp_path)
    manifest = json.loads((tmp_path / "sentinel.json").read_text())
    manifest["spec"][field] = value
    (tmp_path / "sentinel.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match=f"sentinel.json disagrees with config.json \\({field} {value!r}"):
        load_adaptive_model(str(tmp_path))


def test_baseline_is_left_intact_when_given(synthetic_folders):
    hf = load_baseline_model(synthetic_folders("opt-pre-ln"))
    before = {k: v.clone() for k, v in hf.state_dict().items()}
    model = load_adaptive_model("label", baseline_model=hf)
    with torch.no_grad():
        model.embed.weight.add_(1.0)  # the adaptive model owns its own storage
    for k, v in hf.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert json.loads(hf.config.to_json_string())["model_type"] == "opt"


def test_loader_does_not_keep_weights_twice(synthetic_folders):
    """load_adaptive_model releases each HF tensor once converted; no two parameters share storage."""
    from sentinel_core.convert import build_decoder
    from sentinel_core.model import AdaptiveCausalLM

    hf = load_baseline_model(synthetic_folders("llama-gqa"))
    model = build_decoder(AdaptiveCausalLM, hf, consume=True, config=hf.config)
    assert all(p.numel() == 0 for p in hf.parameters()), "HF tensors still alive after a consuming conversion"
    storages = [p.untyped_storage().data_ptr() for p in model.parameters()]
    assert len(storages) == len(set(storages))


def test_bloom_slow_but_exact_tensor_parallel_is_refused(tmp_path):
    from transformers import BloomConfig

    make_synthetic_checkpoint(BloomConfig(vocab_size=64, hidden_size=32, n_layer=1, n_head=2, pretraining_tp=2,
                                          slow_but_exact=True), tmp_path)
    with pytest.raises(UnsupportedConfigError, match="slow_but_exact"):
        load_adaptive_model(tmp_path)


def test_generate_needs_at_least_one_new_token(synthetic_folders):
    model = load_adaptive_model(synthetic_folders("gpt2"))
    with pytest.raises(ValueError, match="max_new_tokens"):
        model.generate(torch.tensor([[5, 6, 7]]), max_new_tokens=0)


@pytest.mark.parametrize("flags, named", [
    ({"new_decoder_architecture": True, "parallel_attn": False, "num_kv_heads": 2}, "parallel_attn"),
])
def test_falcon_layouts_without_one_hf_reference_are_refused(tmp_path, flags, named):
    from transformers import FalconConfig

    config = FalconConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, **flags)
    make_synthetic_checkpoint(config, tmp_path, calibrate=False)  # HF cannot run these layouts
    with pytest.raises(UnsupportedConfigError) as exc:
        load_adaptive_model(tmp_path)
    assert named in one_line(exc) and "falcon" in one_line(exc)

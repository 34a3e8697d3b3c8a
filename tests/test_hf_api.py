"""The calls HF users make, on both paths (native decoder, generic wrapper), meaning what they mean on HF's model:
from_pretrained, dtype="auto", torch_dtype, revision, generate's generation_config / max_length /
return_dict_in_generate, forward(labels=...).loss, num_parameters, save_pretrained(safe_serialization=...),
pruned_heads as an attribute, and gates written without torch.no_grad()."""

import copy

import pytest
import torch
from transformers import GenerationConfig, GPTBigCodeConfig

import sentinel_core.loader as loader
from sentinel_core import (AdaptiveCausalLM, DtypeError, InputError, load_adaptive_model, load_baseline_model,
                           resolve_checkpoint)
from sentinel_core.errors import DeviceError
from sentinel_core.generic import GenericGatedLM
from sentinel_core.importance import head_importance
from sentinel_core.synthetic import make_synthetic_checkpoint

VOCAB = 512


@pytest.fixture(scope="module")
def folders(synthetic_folders, tmp_path_factory):
    wrapper = GPTBigCodeConfig(vocab_size=VOCAB, n_embd=64, n_layer=2, n_head=4, n_positions=64, multi_query=True,
                               bos_token_id=1, eos_token_id=2)
    return {"native": synthetic_folders("llama-gqa"), "learned positions": synthetic_folders("gpt2"),
            "wrapper": make_synthetic_checkpoint(wrapper, tmp_path_factory.mktemp("gpt_bigcode"), seed=1234)}


@pytest.fixture(scope="module", params=["native", "learned positions", "wrapper"])
def pair(request, folders):
    folder = folders[request.param]
    return load_baseline_model(folder, attn_implementation="eager"), load_adaptive_model(folder), folder


def test_from_pretrained_is_load_adaptive_model(pair, left_padded_batch):
    hf, adaptive, folder = pair
    ids, mask = left_padded_batch
    for cls in (AdaptiveCausalLM, GenericGatedLM):  # as AutoModel: the class follows the checkpoint
        loaded = cls.from_pretrained(folder)
        assert type(loaded) is type(adaptive) and not loaded.training
        with torch.no_grad():
            assert torch.equal(loaded(ids, attention_mask=mask).logits, adaptive(ids, attention_mask=mask).logits)


def test_dtype_auto_takes_the_checkpoints_own(pair, tmp_path):
    hf, adaptive, _ = pair
    copy.deepcopy(hf).to(torch.bfloat16).save_pretrained(tmp_path)
    theirs = load_baseline_model(tmp_path, dtype="auto").dtype
    assert theirs == torch.bfloat16
    assert load_adaptive_model(tmp_path, dtype="auto").dtype == theirs
    assert load_adaptive_model(tmp_path, torch_dtype="auto").dtype == theirs
    assert load_adaptive_model(tmp_path, torch_dtype=torch.float16).dtype == torch.float16
    with pytest.raises(DtypeError, match="disagree"):
        load_adaptive_model(tmp_path, dtype="float32", torch_dtype=torch.float16)


def test_revision_and_remote_code_reach_transformers(monkeypatch, folders):
    seen = []

    def recording(name, **kwargs):
        seen.append(kwargs)
        raise RuntimeError("stop here")

    monkeypatch.setattr(loader.AutoConfig, "from_pretrained", recording)
    with pytest.raises(RuntimeError, match="stop here"):
        load_adaptive_model(str(folders["native"]), revision="v1.0")
    assert seen[-1]["revision"] == "v1.0" and seen[-1]["trust_remote_code"] is False
    monkeypatch.undo()
    resolved = resolve_checkpoint(str(folders["native"]), revision="main")
    monkeypatch.setattr(loader.AutoModelForCausalLM, "from_pretrained", recording)
    with pytest.raises(RuntimeError, match="stop here"):
        load_baseline_model(resolved)
    assert seen[-1]["revision"] == "main"


def test_generate_reads_a_generation_config_and_max_length_as_hf_does(pair, left_padded_batch):
    hf, adaptive, _ = pair
    ids, mask = left_padded_batch
    config = GenerationConfig(max_new_tokens=6, do_sample=False, eos_token_id=2, pad_token_id=0)
    theirs = hf.generate(ids, attention_mask=mask, generation_config=config)
    assert torch.equal(adaptive.generate(ids, attention_mask=mask, generation_config=config), theirs)
    by_length = adaptive.generate(ids, attention_mask=mask, max_length=ids.shape[1] + 6, eos_token_id=2,
                                  pad_token_id=0)
    assert torch.equal(by_length, theirs)
    # an explicit argument wins over the config's value, as in HF
    shorter = adaptive.generate(ids, attention_mask=mask, generation_config=config, max_new_tokens=2)
    assert torch.equal(shorter, hf.generate(ids, attention_mask=mask, generation_config=config, max_new_tokens=2))
    output = adaptive.generate(ids, attention_mask=mask, generation_config=config, return_dict_in_generate=True)
    assert torch.equal(output.sequences, theirs)


def test_labels_give_hfs_loss(pair, left_padded_batch):
    hf, adaptive, _ = pair
    ids, mask = left_padded_batch
    if isinstance(adaptive, GenericGatedLM):
        # The last pad position predicts the first real token, and its logits are HF's attention backend's own
        # (the wrapper runs HF's default, the reference eager): compare on the unpadded row.
        ids, mask = ids[:1], mask[:1]
    labels = ids.masked_fill(mask == 0, -100)
    with torch.no_grad():
        ours = adaptive(ids, attention_mask=mask, labels=labels).loss
        theirs = hf(ids, attention_mask=mask, labels=labels).loss
        assert adaptive(ids, attention_mask=mask).loss is None
    assert ours.shape == () and torch.allclose(ours, theirs, rtol=0, atol=1e-5), (ours, theirs)


def test_labels_of_another_shape_are_refused(pair):
    _, adaptive, _ = pair
    if isinstance(adaptive, GenericGatedLM):
        pytest.skip("the wrapper passes labels to HF's own forward, which checks them")
    with pytest.raises(InputError, match="labels must be a tensor of the ids' shape"):
        adaptive(torch.tensor([[5, 6, 7]]), labels=torch.tensor([[5, 6]]))


def test_num_parameters_counts_as_hf_plus_one_gate_per_head(pair):
    hf, adaptive, _ = pair
    gates = adaptive.gates.numel()
    assert adaptive.num_parameters() == hf.num_parameters() + gates
    assert adaptive.num_parameters(exclude_embeddings=True) == hf.num_parameters(exclude_embeddings=True) + gates
    assert adaptive.num_parameters(only_trainable=True) == hf.num_parameters(only_trainable=True)  # gates: set, not trained


def test_save_pretrained_takes_safe_serialization_and_refuses_what_it_cannot_do(folders, tmp_path):
    model = load_adaptive_model(folders["native"])
    model.save_pretrained(tmp_path / "safe", safe_serialization=True)
    assert load_adaptive_model(tmp_path / "safe").spec == model.spec
    with pytest.raises(InputError, match="safetensors only"):
        model.save_pretrained(tmp_path / "pickle", safe_serialization=False)
    with pytest.raises(InputError, match="push_to_hub="):
        model.save_pretrained(tmp_path / "hub", push_to_hub=True)
    assert not (tmp_path / "pickle").exists() and not (tmp_path / "hub").exists()


def test_pruned_heads_is_an_attribute_and_gates_take_plain_writes(pair):
    _, adaptive, _ = pair
    assert adaptive.pruned_heads == {}
    before = adaptive.gates.clone()
    adaptive.gates[0, 1] = 0.0  # no torch.no_grad() needed: gates are set, not trained
    try:
        with torch.no_grad():
            assert not torch.equal(adaptive(torch.tensor([[5, 6, 7]])).logits,
                                   load_adaptive_model(pair[2])(torch.tensor([[5, 6, 7]])).logits)
    finally:
        adaptive.gates.data.copy_(before)


def test_importance_refuses_what_it_cannot_score(folders):
    model = load_adaptive_model(folders["native"])
    with pytest.raises(InputError, match="use one of"):
        head_importance(model, torch.tensor([[5, 6, 7]]), method="Gradient")
    with pytest.raises(InputError, match="at least 2 tokens"):
        head_importance(model, torch.tensor([[5]]))
    with pytest.raises(InputError, match="no two real tokens"):
        head_importance(model, torch.tensor([[0, 0, 5]]), attention_mask=torch.tensor([[0, 0, 1]]))


def test_learned_positions_end_at_the_table(folders):
    model = load_adaptive_model(folders["learned positions"])  # 64 learned positions
    with pytest.raises(InputError, match="max_new_tokens=4 or less"):
        model.generate(torch.full((1, 60), 5), max_new_tokens=10)
    with pytest.raises(InputError, match="learned 64 positions"):
        model(torch.full((1, 65), 5))
    assert model.generate(torch.full((1, 60), 5), max_new_tokens=4, eos_token_id=[]).shape == (1, 64)


def test_a_model_on_the_meta_device_says_so(folders):
    model = load_adaptive_model(folders["native"]).to("meta")
    with pytest.raises(DeviceError, match="meta device"):
        model(torch.tensor([[5, 6, 7]], device="meta"))

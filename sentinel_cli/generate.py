"""`sentinel generate` (also `sentinel` / `python main.py` with no command): generate text with the gated decoder.

    sentinel generate --model-name distilgpt2 --prompt "The meaning of life is"
    python main.py --model_name distilgpt2 --prompt "Once upon a time" --do_sample --seed 1 --baseline

Nothing here imports torch or transformers before the arguments are parsed, so --help answers at once.
"""

from __future__ import annotations

from sentinel_core.names import NATIVE

import argparse
import random
import sys
from pathlib import Path

from sentinel_core.errors import CheckpointError, SentinelError
from .common import DISTRIBUTION, add_option, parse, run_reporting_errors

HELP = "generate text with the gated decoder (the default command)"

DESCRIPTION = "Generate text with a Hugging Face causal LM rebuilt as Sentinel's gated decoder."

EPILOG = """\
decoding:
  Greedy decoding is the default. Sampling is switched on by --do_sample, or by giving any
  sampling knob that changes the distribution: --temperature other than 0 or 1, --top_k above 0,
  or --top_p below 1. --temperature 0 means greedy (and is refused together with --do_sample).
  --repetition_penalty applies to greedy and sampled decoding alike.
  Sampling without --seed draws a random seed and prints it in the header, so any run can be
  repeated with --seed. Adaptive and --baseline runs sample from the same seed: their outputs
  agree as long as their next-token distributions agree.

output:
  A header line (model, family, device, dtype, gates = layers x heads) is printed first, then the
  prompt and its continuation are streamed to stdout as they are generated, special tokens
  skipped. With --baseline the Hugging Face model then generates with the same settings; both
  outputs are labelled and a last line says whether their token ids are identical.
  Errors are one line on stderr, "error: ...", with exit status 2.

examples (options take either spelling: --max_new_tokens or --max-new-tokens):
  sentinel generate --model-name distilgpt2 --prompt "The meaning of life is" --max-new-tokens 20
  python main.py --model_name distilgpt2 --prompt "The meaning of life is"
  python main.py --model_name gpt2 --prompt "Once upon a time" --do_sample --top_p 0.9 --seed 1
  python main.py --model_name ./my-checkpoint --prompt "Hello" --baseline
  python main.py --model_name ./tinyllama.Q8_0.gguf --prompt "Hello"
"""


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def _probability(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return value


def build_parser(prog: str = "sentinel generate") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_option(p, "--model_name", required=True, metavar="MODEL",
               help="hub id (distilgpt2, meta-llama/Llama-3.2-1B), local model folder, or path to a .gguf file")
    add_option(p, "--prompt", required=True, help="text to continue")
    add_option(p, "--max_new_tokens", type=_positive_int, default=50, metavar="N",
               help="tokens to generate (default: 50)")
    add_option(p, "--device", choices=("auto", "cpu", "cuda"), default="auto",
               help="auto (default) is cuda when available, else cpu")
    add_option(p, "--dtype", choices=("auto", "float32", "bfloat16", "float16"), default="auto",
               help="auto (default) is float32 on cpu, bfloat16 on cuda")
    g = p.add_argument_group("decoding (greedy unless sampling is asked for; see below)")
    add_option(g, "--do_sample", action="store_true", help="sample instead of greedy decoding")
    add_option(g, "--temperature", type=_non_negative_float, default=None, metavar="T",
               help="sampling temperature (default 1.0); a value other than 0 or 1 turns sampling on; 0 means greedy")
    add_option(g, "--top_k", type=_non_negative_int, default=None, metavar="K",
               help="keep the k most likely tokens when sampling (default 0: off); above 0 turns sampling on")
    add_option(g, "--top_p", type=_probability, default=None, metavar="P",
               help="nucleus sampling mass (default 1.0: off); below 1 turns sampling on")
    add_option(g, "--repetition_penalty", type=_positive_float, default=1.0, metavar="R",
               help="HF repetition penalty, greedy or sampled (default 1.0: off)")
    add_option(g, "--seed", type=int, default=None,
               help="seed for torch and the sampler (default: a random seed, printed in the header)")
    add_option(p, "--baseline", action="store_true",
               help="also generate with the Hugging Face model, same settings, and print both outputs")
    add_option(p, "--trust_remote_code", action="store_true",
               help="allow the checkpoint's own Python code (off by default; only for repos you trust)")
    return p


def sampling_settings(args) -> dict:
    """do_sample/temperature/top_k/top_p as generate wants them, from the rule in the --help epilog."""
    temperature = 1.0 if args.temperature is None else args.temperature
    top_k = args.top_k or 0
    top_p = 1.0 if args.top_p is None else args.top_p
    if temperature == 0:
        if args.do_sample:
            raise SentinelError("--temperature 0 means greedy decoding; drop --do_sample or give a temperature above 0")
        return {"do_sample": False, "temperature": 1.0, "top_k": 0, "top_p": 1.0}
    do_sample = args.do_sample or temperature != 1.0 or top_k > 0 or top_p < 1.0
    return {"do_sample": do_sample, "temperature": temperature, "top_k": top_k, "top_p": top_p}


def resolve_device(name: str) -> str:
    import torch

    from sentinel_core.loader import check_device

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    check_device(name, cpu="--device cpu")  # the API's rule, in the CLI's spelling
    return name


def resolve_dtype_name(name: str, device: str) -> str:
    if name == "auto":
        return "bfloat16" if device == "cuda" else "float32"
    return name


def _header(args, model, device: str, dtype_name: str, sampling: dict, seed) -> str:
    L, H = model.num_layers, model.num_heads
    decoding = "sample" if sampling["do_sample"] else "greedy"
    if sampling["do_sample"]:
        knobs = [f"temperature={sampling['temperature']:g}"]
        if sampling["top_k"]:
            knobs.append(f"top_k={sampling['top_k']}")
        if sampling["top_p"] < 1.0:
            knobs.append(f"top_p={sampling['top_p']:g}")
        decoding += f" ({', '.join(knobs)}, seed={seed})"
    if args.repetition_penalty != 1.0:
        decoding += f", repetition_penalty={args.repetition_penalty:g}"
    family = model.spec.family + ("" if model.adaptive_path == NATIVE else " (generic gated wrapper)")
    return (f"sentinel | model: {args.model_name} | family: {family} | device: {device} | "
            f"dtype: {dtype_name} | heads: {L} layers x {H} heads = {L * H} gates | decoding: {decoding}")


def check_prompt(prompt: str) -> None:
    """Text only: argv bytes that are not UTF-8 reach Python as lone surrogates (PEP 383), which no tokenizer reads."""
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = ord(prompt[exc.start])
        what = f"byte 0x{bad - 0xDC00:02x}" if 0xDC80 <= bad <= 0xDCFF else f"character U+{bad:04X}"
        raise SentinelError(f"--prompt must be UTF-8 text, and it holds {what} at position {exc.start}: pass the "
                            f"prompt as UTF-8 (check the terminal's or the file's encoding)") from exc


def encode_prompt(tokenizer, prompt: str):
    """input_ids and attention_mask [1, T]; an empty prompt starts from BOS."""
    import torch

    input_ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    if input_ids.shape[1] == 0:
        if tokenizer.bos_token_id is None:
            raise SentinelError("the prompt is empty and the tokenizer has no BOS token to start from: give a prompt")
        input_ids = torch.tensor([[tokenizer.bos_token_id]])
    return input_ids, torch.ones_like(input_ids)


def _has_position_table(config, max_positions: int, trust_remote_code: bool) -> bool:
    """Whether the HF model looks positions up in a learned table: an embedding besides the token embedding with
    a row per position (up to 2 more: OPT-style offsets). Built on the meta device, so no weights are read."""
    import torch
    from torch import nn
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    tokens = model.get_input_embeddings()
    return any(isinstance(m, nn.Embedding) and m is not tokens and 0 <= m.num_embeddings - max_positions <= 2
               for m in model.modules())


def _check_context(config, spec, prompt_len: int, max_new_tokens: int, trust_remote_code: bool) -> None:
    """Refuse to run past the end of a learned position table (rotary and ALiBi positions have no end)."""
    if not spec.max_positions or prompt_len + max_new_tokens <= spec.max_positions:
        return
    # A wrapped model ("hf" positions) computes its own positions: its modules say whether they are learned.
    learned = spec.positions == "learned" or (
        spec.positions == "hf" and _has_position_table(config, spec.max_positions, trust_remote_code))
    if learned:
        raise SentinelError(f"prompt ({prompt_len} tokens) + --max_new_tokens {max_new_tokens} exceeds the model's "
                            f"{spec.max_positions} positions: shorten the prompt or lower --max_new_tokens")


def _first_difference(a, b) -> int | None:
    a, b = a.flatten().tolist(), b.flatten().tolist()
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def resolve_model(name: str) -> str:
    """What --model-name names, as a loadable folder or hub id: a .gguf file as its fp32 folder, converted once and
    cached (transformers would parse the file on every load); a catalog id whose weights ship in a package as
    those real weights (a tiny/ catalog id, random weights without a tokenizer, is refused). Anything else as
    given."""
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise SentinelError(f"no GGUF file at {path}: check the path")
        from sentinel_matrix.sources import gguf_checkpoint, gguf_folder, missing_modules

        missing = missing_modules()
        if missing:
            raise SentinelError(f"reading a GGUF needs {', '.join(missing)}: pip install '{DISTRIBUTION}[gguf]'")
        if not gguf_folder(path).exists():
            print(f"converting {path.name} to an fp32 folder once (later runs reuse it) ...", file=sys.stderr,
                  flush=True)
        try:
            return str(gguf_checkpoint(path))
        except RuntimeError as exc:  # the converter's own sentence names the cause and the fix
            cause = exc.__cause__ or exc
            raise CheckpointError(f"{path} is not a readable GGUF file ({str(cause).splitlines()[0][:200]}): it is "
                                  f"truncated or corrupt, or its architecture is not one transformers' GGUF loader "
                                  f"reads") from exc
    if path.exists():
        return name
    from sentinel_matrix.catalog import load_catalog
    from sentinel_matrix.sources import PACKAGED, packaged_checkpoint, packaged_gguf_path

    entry = next((e for e in load_catalog() if name in (e.id, e.slug)), None)
    if entry is None:
        return name
    if entry.id in PACKAGED and packaged_gguf_path(PACKAGED[entry.id]) is not None:
        return str(packaged_checkpoint(entry.id))
    if entry.id.startswith("tiny/"):  # the matrix feeds them random ids; there is no text to encode
        raise SentinelError(f"{entry.id} is a test model of random weights with no tokenizer: `sentinel check "
                            f"{entry.id}` runs its rows; generate needs a model with a tokenizer")
    return entry.id


def run(args) -> int:
    import torch
    from transformers import TextStreamer

    from sentinel_core.generation import generation_tokens
    from sentinel_core.loader import load_adaptive_model, load_baseline_model, load_tokenizer, resolve_checkpoint

    check_prompt(args.prompt)
    sampling = sampling_settings(args)
    device = resolve_device(args.device)
    dtype_name = resolve_dtype_name(args.dtype, device)
    seed = args.seed
    if seed is not None and not 0 <= seed < 2**63:  # torch.manual_seed's range
        raise SentinelError(f"--seed {seed}: give a seed in [0, 2**63 - 1]")
    if seed is None and sampling["do_sample"]:
        seed = random.SystemRandom().randrange(2**32)
    if seed is not None:
        torch.manual_seed(seed)

    trc = args.trust_remote_code
    source = resolve_model(args.model_name)
    # An unsupported family or config flag, a missing tokenizer or a too-long prompt fail before any weights are read.
    # A model_type with no converter runs through the generic gated wrapper, if it has attention heads to gate.
    # The config is read once: the loaders below take the resolved checkpoint.
    checkpoint = resolve_checkpoint(source, trust_remote_code=trc)
    tokenizer = load_tokenizer(source, trust_remote_code=trc)
    input_ids, attention_mask = encode_prompt(tokenizer, args.prompt)
    _check_context(checkpoint.config, checkpoint.spec, input_ids.shape[1], args.max_new_tokens, trust_remote_code=trc)

    baseline = None
    if args.baseline or trc:
        # load_adaptive_model(name) takes no HF kwargs, so remote code goes through an HF model we load.
        baseline = load_baseline_model(checkpoint, device=device, dtype=dtype_name, trust_remote_code=trc)
        model = load_adaptive_model(checkpoint, baseline_model=baseline, device=device, dtype=dtype_name)
        if not args.baseline:
            baseline = None
    else:
        model = load_adaptive_model(checkpoint, device=device, dtype=dtype_name)

    print(_header(args, model, device, dtype_name, sampling, seed), flush=True)

    input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)

    # The checkpoint's eos ids (generation_config, then config), as HF generate takes them; the tokenizer's pad.
    eos, pad = generation_tokens(model, args.max_new_tokens, eos_token_id=None, pad_token_id=tokenizer.pad_token_id)
    settings = dict(max_new_tokens=args.max_new_tokens, repetition_penalty=args.repetition_penalty,
                    eos_token_id=eos or None, pad_token_id=pad, **sampling)

    def streamer():
        return TextStreamer(tokenizer, skip_prompt=False, skip_special_tokens=True)

    if baseline is not None:
        print("[adaptive]", flush=True)
    generator = None
    if sampling["do_sample"]:
        generator = torch.Generator(device=device).manual_seed(seed)
    ours = model.generate(input_ids, attention_mask=attention_mask, streamer=streamer(), generator=generator,
                          **settings)

    if baseline is not None:
        print("[baseline: transformers]", flush=True)
        hf_settings = dict(settings)
        if not sampling["do_sample"]:  # HF warns about sampling knobs in greedy mode
            for knob in ("temperature", "top_k", "top_p"):
                hf_settings.pop(knob)
        if seed is not None:
            torch.manual_seed(seed)  # HF samples from the global generator: same seed, same draws
        with torch.no_grad():
            theirs = baseline.generate(input_ids, attention_mask=attention_mask, streamer=streamer(),
                                       **hf_settings)
        first = _first_difference(ours.cpu(), theirs.cpu())
        if first is None:
            print("[match] adaptive and baseline token ids are identical", flush=True)
        else:
            print(f"[differ] adaptive and baseline token ids first differ at generated token "
                  f"{first - input_ids.shape[1]}", flush=True)
    return 0


def main(argv=None, prog: str = "sentinel generate") -> int:
    args = parse(build_parser(prog), argv)
    return args if isinstance(args, int) else run_reporting_errors(run, args)

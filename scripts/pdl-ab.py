"""On a Hopper GPU: the fused decode step's time per token with programmatic dependent launch off and on, interleaved,
for catalog entries at full depth (synthetic bf16). Decides triton_kernels.PROGRAMMATIC_DEPENDENT_LAUNCH.

    python3 scripts/pdl-ab.py MODEL [MODEL ...]
"""
import sys

import torch

sys.path.insert(0, ".")
from sentinel_core import load_adaptive_model, triton_kernels  # noqa: E402
from sentinel_matrix.catalog import load_catalog  # noqa: E402
from sentinel_matrix.checks.bench import DECODE_PROMPT  # noqa: E402
from sentinel_matrix.checks.profile import profile_path  # noqa: E402
from sentinel_matrix.sources import synthetic_checkpoint  # noqa: E402

print(torch.cuda.get_device_name(0), flush=True)
entries = {e.id: e for e in load_catalog()}
for model_id in sys.argv[1:]:
    model = load_adaptive_model(synthetic_checkpoint(entries[model_id], full_depth=True), device="cuda",
                                dtype="bfloat16")
    prompt = torch.randint(3, model.spec.vocab_size, (1, DECODE_PROMPT), generator=torch.Generator().manual_seed(0))
    prompt = prompt.cuda()
    times = {False: [], True: []}
    tokens = {}
    for _ in range(3):
        for on in (False, True):
            triton_kernels.PROGRAMMATIC_DEPENDENT_LAUNCH = on
            out = profile_path(model, prompt, {"fused": True}, None, "")
            times[on].append(out["wall_ms_per_step"])
            tokens[on] = model.generate(prompt, max_new_tokens=32, eos_token_id=[], fused=True)
    same = torch.equal(tokens[False], tokens[True])
    print(f"{model_id}: ms/step off {sorted(times[False])} on {sorted(times[True])}; kernels "
          f"{out['kernels_per_step']:.0f}; busy {out['kernel_ms_per_step']:.3f} ms; same tokens {same}", flush=True)
    del model
    torch.cuda.empty_cache()

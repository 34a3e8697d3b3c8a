"""Command-line options of the compatibility matrix (registered here so `pytest matrix/ ...` and a plain
`pytest` from the repository root both know them)."""


def pytest_addoption(parser):
    group = parser.getgroup("sentinel matrix")
    group.addoption("--families", default="", help="comma-separated model_types to run (gpt2,opt,gpt_neox,bloom,llama)")
    group.addoption("--models", default="",
                    help="comma-separated model ids (exact, or globs like 'gpt2*'); an exact id includes a slow entry")
    group.addoption("--checks", default="", help="comma-separated checks: load,infer,quality,mutation,bench (default: all but bench)")
    group.addoption("--devices", default="cpu", help="comma-separated devices: cpu,cuda")
    group.addoption("--weights", default="default",
                    help="hub|package|synthetic|all, comma-separated; default: everything that runs offline in "
                         "the time budget (package + synthetic, hub rows where cached)")
    group.addoption("--slow", action="store_true", help="include catalog entries marked slow")
    group.addoption("--cuda-dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"],
                    help="dtype of CUDA rows (CPU rows are float32; CUDA float32 runs with TF32 off)")
    group.addoption("--bench-compiled", action="store_true",
                    help="bench on CUDA also times the torch.compile'd decode step (compiles once per batch size)")
    group.addoption("--results", default="results/latest.jsonl", help="JSONL file the rows are appended to")
    group.addoption("--results-fresh", action="store_true",
                    help="start --results afresh instead of appending (the newest record per row wins anyway)")

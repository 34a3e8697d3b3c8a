"""The matrix's checks, one module each (load, infer, quality, mutation, prune, bench), on a loaded model pair
(pair.py) and shared inputs (inputs.py, reference.py). Each takes the pair, returns metrics, and raises CheckFailed
with a message that names the difference when the adaptive model is not the HF model. A row's evidence names the
modules its check ran (sentinel_matrix/evidence.py), so editing one check stales that check's rows."""

from sentinel_core.generation import position_ids as generate_positions  # noqa: F401  (HF generate's rule)

from .infer import INFER_NEW_TOKENS, check_infer  # noqa: F401
from .inputs import PROMPTS, _logprobs, hf_position_kwargs, input_batch, max_positions, statistics_inputs  # noqa: F401
from .load import check_load, gate_effect  # noqa: F401
from .mutation import check_mutation  # noqa: F401
from .pair import CheckFailed, CheckInconclusive, ModelPair, load_pair  # noqa: F401
from .quality import check_quality, rank_check, sample_output  # noqa: F401
from .reference import Reference, adaptive_logprobs, attention_paths_diff, hf_reference  # noqa: F401

# One name per check, for either architecture (kinds.py): an encoder-decoder pair gets seq2seq.py's.
from . import seq2seq as _seq2seq  # noqa: E402
from . import seq2seq_bench  # noqa: E402, F401  (registers the encoder-decoder's bench with bench.py)
from .kinds import by_architecture, is_encoder_decoder  # noqa: E402, F401

check_load = by_architecture(check_load, _seq2seq.check_load)
check_infer = by_architecture(check_infer, _seq2seq.check_infer)
check_quality = by_architecture(check_quality, _seq2seq.check_quality)
check_mutation = by_architecture(check_mutation, _seq2seq.check_mutation)

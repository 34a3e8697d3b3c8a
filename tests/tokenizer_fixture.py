"""A small real tokenizer, made offline, for synthetic checkpoints.

A byte-level BPE (GPT-2's scheme) trained with the `tokenizers` library on the inline English text
below, with exactly the checkpoint's vocabulary size and its bos/eos/pad ids, wrapped in
`PreTrainedTokenizerFast` and saved with `save_pretrained`, so `AutoTokenizer.from_pretrained(folder)`
loads it like any hub tokenizer (transformers 4.57 and 5.x).
"""

from __future__ import annotations

from pathlib import Path

TEXT = """\
The old lighthouse stood at the end of the harbour wall, and every evening the keeper climbed the
narrow stairs to light the lamp. Ships that passed in the night saw the beam turn slowly across the
water, and the sailors knew they were close to home. In winter the storms came from the north, the
waves broke over the wall, and the keeper watched the sea from the small window near the top.

A river runs through the middle of the town. On market days the bridge is crowded with people who
carry baskets of bread, cheese, apples and fish. Children run between the stalls, dogs bark at the
pigeons, and the baker sells warm rolls until the last one is gone. When the sun goes down, the
traders pack their carts and the square becomes quiet again.

Science begins with a question. A student wonders why the sky is blue, why leaves change colour in
autumn, or how a bird can find its way across an ocean. She reads what others have written, makes a
careful guess, and designs an experiment to test it. If the result surprises her, that is not a
failure: it is the beginning of a better question.

The train left the station at seven o'clock in the morning. Through the window we saw green fields,
small villages with white houses, and a long line of hills covered in forest. A man across the aisle
was reading a newspaper, a woman was writing a letter, and a little boy counted the cows he could see.
By noon we had reached the coast, where the air smelled of salt and the gulls cried over the beach.

Computers follow instructions exactly as they are written. A program is a list of such instructions,
and a programmer must think about every case the program might meet: an empty list, a very large
number, a file that does not exist. Good programs explain their errors in plain words, so that the
person using them knows what went wrong and what to do next.

Once upon a time there was a fox who lived at the edge of a great forest. Every morning he walked to
the river to drink, and every evening he returned to his den beneath the roots of an ancient oak.
One day he met a crow who was sitting on a branch with a piece of cheese in her beak, and the fox
began to praise her beautiful voice, hoping that she would sing and drop her breakfast.
"""

# Names for the special tokens; their ids follow the checkpoint's config.
BOS, EOS, PAD = "<s>", "</s>", "<pad>"


def _special_tokens(bos_id: int | None, eos_id: int | None, pad_id: int | None) -> tuple[list[str], dict]:
    """Special tokens laid out so that each lands on the id the config gives it (trainer ids follow list order)."""
    wanted: dict[int, str] = {}
    for token_id, name in ((pad_id, PAD), (bos_id, BOS), (eos_id, EOS)):  # eos wins a shared id (OPT: bos == eos)
        if token_id is not None:
            wanted[int(token_id)] = name
    size = max(wanted, default=-1) + 1
    specials = [wanted.get(i, f"<unused{i}>") for i in range(size)]
    roles = {}
    if bos_id is not None:
        roles["bos_token"] = wanted[int(bos_id)]
    if eos_id is not None:
        roles["eos_token"] = wanted[int(eos_id)]
    if pad_id is not None:
        roles["pad_token"] = wanted[int(pad_id)]
    return specials, roles


def make_tokenizer(vocab_size: int = 512, bos_token_id: int | None = 1, eos_token_id: int | None = 2,
                   pad_token_id: int | None = None):
    """A PreTrainedTokenizerFast with exactly `vocab_size` tokens and the given special-token ids."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials, roles = _special_tokens(bos_token_id, eos_token_id, pad_token_id)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), min_frequency=1)
    tok.train_from_iterator(TEXT.split("\n\n"), trainer=trainer)
    if tok.get_vocab_size() != vocab_size:
        raise RuntimeError(f"trained {tok.get_vocab_size()} tokens, wanted {vocab_size}: add text to TEXT")
    for name in set(roles.values()):
        if tok.token_to_id(name) != specials.index(name):
            raise RuntimeError(f"special token {name} landed on id {tok.token_to_id(name)}")
    # clean_up_tokenization_spaces=False: decoding stays prefix-stable, so streamed text equals decode(ids).
    return PreTrainedTokenizerFast(tokenizer_object=tok, clean_up_tokenization_spaces=False,
                                   model_max_length=1_000_000, **roles)


def save_tokenizer(folder: str | Path, config=None, vocab_size: int | None = None):
    """Train and save a tokenizer into `folder` (next to a synthetic checkpoint); sizes and ids from `config`."""
    if vocab_size is None:
        vocab_size = config.vocab_size if config is not None else 512
    ids = {k: getattr(config, k, None) if config is not None else d
           for k, d in (("bos_token_id", 1), ("eos_token_id", 2), ("pad_token_id", None))}
    ids = {k: v[0] if isinstance(v, (list, tuple)) else v for k, v in ids.items()}  # several eos ids: the first
    tokenizer = make_tokenizer(vocab_size, **ids)
    tokenizer.save_pretrained(str(folder))
    return tokenizer

"""Train the synthetic world's tokenizer: byte-level BPE that behaves like a Llama tokenizer.

Byte-level BPE (GPT-2's byte alphabet) is chosen over Llama's Metaspace scheme because every
string, newlines and repeated spaces included, decodes back to exactly itself with no byte
fallback tokens and no "strip the leading space" rule. Digits are split one by one, like Llama,
so counts and numbers never merge into opaque tokens. The saved folder loads with
`AutoTokenizer.from_pretrained` and prepends `<s>` like Llama/Vicuna (`add_bos_token`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

PAD_TOKEN = "<pad>"
UNK_TOKEN = "<unk>"
BOS_TOKEN = "<s>"
EOS_TOKEN = "</s>"
# Order fixes the ids: pad=0, unk=1, bos=2, eos=3. The end-of-sequence id is deliberately not 2:
# transformers' CLIP text tower treats eos_token_id == 2 as a legacy checkpoint and pools the
# token with the highest id instead of the end-of-sequence token.
SPECIAL_TOKENS = (PAD_TOKEN, UNK_TOKEN, BOS_TOKEN, EOS_TOKEN)
MODEL_MAX_LENGTH = 2048
"""The LLaVA-1.5 context length; recorded in the tokenizer config for downstream truncation."""


def train_tokenizer(texts: Iterable[str], out_dir: str | Path, vocab_size: int = 2000):
    """Train a byte-level BPE tokenizer on `texts` and save it to `out_dir`.

    Returns the `PreTrainedTokenizerFast` that `AutoTokenizer.from_pretrained(out_dir)` rebuilds.
    `vocab_size` counts the special tokens and the 256 byte symbols; a small corpus may stop
    short of it when no pair is left to merge.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    minimum = len(SPECIAL_TOKENS) + 256
    if vocab_size < minimum:
        raise ValueError(
            f"vocab_size must be at least {minimum} (bytes + specials), got {vocab_size}"
        )
    backend = Tokenizer(models.BPE(unk_token=None))
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(_checked_texts(texts), trainer=trainer)

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=UNK_TOKEN,
        pad_token=PAD_TOKEN,
        add_bos_token=True,
        add_eos_token=False,
        clean_up_tokenization_spaces=False,
        model_max_length=MODEL_MAX_LENGTH,
        padding_side="right",
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(out_dir)
    _make_config_portable(out_dir / "tokenizer_config.json")
    return tokenizer


def _make_config_portable(config_path: Path) -> None:
    """Name the tokenizer class and BOS behaviour in terms every transformers version reads.

    transformers 5 writes its internal class name (`TokenizersBackend`) and leaves out
    `add_bos_token`, which transformers 4 (still used by vLLM, SGLang and lmms-eval installs)
    would not understand; version 5 reads the portable names just the same.
    """
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config.update(
        tokenizer_class="PreTrainedTokenizerFast", add_bos_token=True, add_eos_token=False
    )
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _checked_texts(texts: Iterable[str]) -> Iterable[str]:
    """Yield the corpus, refusing non-strings with the position of the offending item."""
    count = 0
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(
                f"tokenizer corpus item {index}: expected str, got {type(text).__name__}"
            )
        count += 1
        yield text
    if count == 0:
        raise ValueError("tokenizer corpus is empty: give at least one text")

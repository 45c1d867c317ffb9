"""Conversation templates: reference strings (LLAVA_FACTS §3) and label masks (§4) on tiny real
tokenizers trained here from the reference strings themselves."""

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from llavakit.conversation import (
    IGNORE_INDEX,
    ConversationError,
    encode,
    format_trained,
    get_template,
    messages_from_llava,
    render_text,
    template_names,
)

RECORD = [
    {"from": "human", "value": "<image>\nWhat are the colors of the bus?"},
    {"from": "gpt", "value": "The bus is white and red."},
    {"from": "human", "value": "What feature can be seen on the back?"},
    {"from": "gpt", "value": "An advertisement."},
]
CAPTION_RECORD = [
    {"from": "human", "value": "Describe the image concisely.\n<image>"},
    {"from": "gpt", "value": "The bus is white and red."},
]

SYSTEM_USER = (
    "A chat between a curious user and an artificial intelligence assistant. The assistant gives"
    " helpful, detailed, and polite answers to the user's questions."
)
SYSTEM_HUMAN = (
    "A chat between a curious human and an artificial intelligence assistant. The assistant gives"
    " helpful, detailed, and polite answers to the human's questions."
)
SYSTEM_LLAMA_2 = (
    "You are a helpful language and vision assistant. You are able to understand the visual"
    " content that the user provides, and assist the user with a variety of tasks using natural"
    " language."
)
SYSTEM_LLAMA_2_CHAT = (
    "You are a helpful, respectful and honest assistant. Always answer as helpfully as possible,"
    " while being safe.  Your answers should not include any harmful, unethical, racist, sexist,"
    " toxic, dangerous, or illegal content. Please ensure that your responses are socially"
    " unbiased and positive in nature.\n\nIf a question does not make any sense, or is not"
    " factually coherent, explain why instead of answering something not correct. If you don't"
    " know the answer to a question, please don't share false information."
)
SYSTEM_MMTAG = (
    "A chat between a curious user and an artificial intelligence assistant. The assistant is"
    " able to understand the visual content that the user provides, and assist the user with a"
    " variety of tasks using natural language.The visual content will be provided with the"
    " following format: <Image>visual content</Image>."
)
SYSTEM_MPT = (
    "A conversation between a user and an LLM-based AI assistant. The assistant gives helpful"
    " and honest answers."
)
# Vicuna v0's built-in example exchange (official `conv_vicuna_v0.messages`).
V0_EXAMPLE = (
    "###Human: What are the key differences between renewable and non-renewable energy sources?"
    "###Assistant: Renewable energy sources are those that can be replenished naturally in a"
    " relatively short amount of time, such as solar, wind, hydro, geothermal, and biomass."
    " Non-renewable energy sources, on the other hand, are finite and will eventually be"
    " depleted, such as coal, oil, and natural gas. Here are some key differences between"
    " renewable and non-renewable energy sources:\n1. Availability: Renewable energy sources"
    " are virtually inexhaustible, while non-renewable energy sources are finite and will"
    " eventually run out.\n2. Environmental impact: Renewable energy sources have a much lower"
    " environmental impact than non-renewable sources, which can lead to air and water"
    " pollution, greenhouse gas emissions, and other negative effects.\n3. Cost: Renewable"
    " energy sources can be more expensive to initially set up, but they typically have lower"
    " operational costs than non-renewable sources.\n4. Reliability: Renewable energy sources"
    " are often more reliable and can be used in more remote locations than non-renewable"
    " sources.\n5. Flexibility: Renewable energy sources are often more flexible and can be"
    " adapted to different situations and needs, while non-renewable sources are more rigid and"
    " inflexible.\n6. Sustainability: Renewable energy sources are more sustainable over the"
    " long term, while non-renewable sources are not, and their depletion can lead to economic"
    " and social instability.\n###"
)
Q1 = "<image>\nWhat are the colors of the bus?"
Q1_MMTAG = "<Image><image></Image>\nWhat are the colors of the bus?"
Q2 = "What feature can be seen on the back?"

# (full rendering of RECORD, generation prompt for its first three turns, trained pieces)
REFERENCE = {
    "vicuna_v1": (
        SYSTEM_USER + " USER: " + Q1 + " ASSISTANT: The bus is white and red.</s>"
        "USER: " + Q2 + " ASSISTANT: An advertisement.</s>",
        SYSTEM_USER + " USER: " + Q1 + " ASSISTANT: The bus is white and red.</s>"
        "USER: " + Q2 + " ASSISTANT:",
        [" The bus is white and red.</s>", " An advertisement.</s>"],
    ),
    "llava_v1": (
        SYSTEM_HUMAN + " USER: " + Q1 + " ASSISTANT: The bus is white and red.</s>"
        "USER: " + Q2 + " ASSISTANT: An advertisement.</s>",
        SYSTEM_HUMAN + " USER: " + Q1 + " ASSISTANT: The bus is white and red.</s>"
        "USER: " + Q2 + " ASSISTANT:",
        [" The bus is white and red.</s>", " An advertisement.</s>"],
    ),
    "llava_v0": (
        SYSTEM_HUMAN + "###Human: " + Q1 + "###Assistant: The bus is white and red.###"
        "Human: " + Q2 + "###Assistant: An advertisement.###",
        SYSTEM_HUMAN + "###Human: " + Q1 + "###Assistant: The bus is white and red.###"
        "Human: " + Q2 + "###Assistant:",
        [" The bus is white and red.###", " An advertisement.###"],
    ),
    "llava_llama_2": (
        "[INST] <<SYS>>\n" + SYSTEM_LLAMA_2 + "\n<</SYS>>\n\n" + Q1 + " [/INST] The bus is white"
        " and red. </s><s>[INST] " + Q2 + " [/INST] An advertisement. </s>",
        "[INST] <<SYS>>\n" + SYSTEM_LLAMA_2 + "\n<</SYS>>\n\n" + Q1 + " [/INST] The bus is white"
        " and red. </s><s>[INST] " + Q2 + " [/INST]",
        [" The bus is white and red. </s>", " An advertisement. </s>"],
    ),
    "mistral_instruct": (
        "[INST] " + Q1 + " [/INST] The bus is white and red. </s>"
        "[INST] " + Q2 + " [/INST] An advertisement. </s>",
        "[INST] " + Q1 + " [/INST] The bus is white and red. </s>[INST] " + Q2 + " [/INST]",
        [" The bus is white and red. </s>", " An advertisement. </s>"],
    ),
    "chatml_direct": (
        "<|im_start|>system\nAnswer the questions.<|im_end|><|im_start|>user\n" + Q1 + "<|im_end|>"
        "<|im_start|>assistant\nThe bus is white and red.<|im_end|><|im_start|>user\n" + Q2 + ""
        "<|im_end|><|im_start|>assistant\nAn advertisement.<|im_end|>",
        "<|im_start|>system\nAnswer the questions.<|im_end|><|im_start|>user\n" + Q1 + "<|im_end|>"
        "<|im_start|>assistant\nThe bus is white and red.<|im_end|><|im_start|>user\n" + Q2 + ""
        "<|im_end|><|im_start|>assistant\n",
        ["The bus is white and red.<|im_end|>", "An advertisement.<|im_end|>"],
    ),
    "v1_mmtag": (
        SYSTEM_MMTAG + " USER: " + Q1_MMTAG + " ASSISTANT: The bus is white and red.</s>"
        "USER: " + Q2 + " ASSISTANT: An advertisement.</s>",
        SYSTEM_MMTAG + " USER: " + Q1_MMTAG + " ASSISTANT: The bus is white and red.</s>"
        "USER: " + Q2 + " ASSISTANT:",
        [" The bus is white and red.</s>", " An advertisement.</s>"],
    ),
    "v0_mmtag": (
        SYSTEM_MMTAG + "###Human: " + Q1_MMTAG + "###Assistant: The bus is white and red.###"
        "Human: " + Q2 + "###Assistant: An advertisement.###",
        SYSTEM_MMTAG + "###Human: " + Q1_MMTAG + "###Assistant: The bus is white and red.###"
        "Human: " + Q2 + "###Assistant:",
        [" The bus is white and red.###", " An advertisement.###"],
    ),
    "v0": (
        SYSTEM_HUMAN + V0_EXAMPLE + "Human: " + Q1 + "###Assistant: The bus is white and red.###"
        "Human: " + Q2 + "###Assistant: An advertisement.###",
        SYSTEM_HUMAN + V0_EXAMPLE + "Human: " + Q1 + "###Assistant: The bus is white and red.###"
        "Human: " + Q2 + "###Assistant:",
        [" The bus is white and red.###", " An advertisement.###"],
    ),
    "llama_2": (
        "[INST] <<SYS>>\n" + SYSTEM_LLAMA_2_CHAT + "\n<</SYS>>\n\n" + Q1 + " [/INST] The bus is"
        " white and red. </s><s>[INST] " + Q2 + " [/INST] An advertisement. </s>",
        "[INST] <<SYS>>\n" + SYSTEM_LLAMA_2_CHAT + "\n<</SYS>>\n\n" + Q1 + " [/INST] The bus is"
        " white and red. </s><s>[INST] " + Q2 + " [/INST]",
        [" The bus is white and red. </s>", " An advertisement. </s>"],
    ),
    "mpt": (
        "<|im_start|>system\n" + SYSTEM_MPT + "<|im_end|><|im_start|>user\n" + Q1 + "<|im_end|>"
        "<|im_start|>assistant\nThe bus is white and red.<|im_end|><|im_start|>user\n" + Q2 + ""
        "<|im_end|><|im_start|>assistant\nAn advertisement.<|im_end|>",
        "<|im_start|>system\n" + SYSTEM_MPT + "<|im_end|><|im_start|>user\n" + Q1 + "<|im_end|>"
        "<|im_start|>assistant\nThe bus is white and red.<|im_end|><|im_start|>user\n" + Q2 + ""
        "<|im_end|><|im_start|>assistant\n",
        ["The bus is white and red.<|im_end|>", "An advertisement.<|im_end|>"],
    ),
}
ALIASES = {
    "v1": "vicuna_v1",
    "default": "v0",
    "mistral_direct": "chatml_direct",
    "v0_plain": "plain",
}
"""The official registry's other names for the same formats."""
PLAIN_REFERENCE = ("<image>The bus is white and red.\n", "<image>", ["The bus is white and red.\n"])
BUILTIN = [*REFERENCE, "plain"]

# A Qwen2-style template: default system turn, newline after every <|im_end|>.
CHATML_TEMPLATE = (
    "{% if messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
CHATML_RENDERING = (
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n" + Q1 + ""
    "<|im_end|>\n<|im_start|>assistant\nThe bus is white and red.<|im_end|>\n<|im_start|>user\n"
    + Q2
    + "<|im_end|>\n<|im_start|>assistant\nAn advertisement.<|im_end|>\n"
)
CORPUS = [text for full, _, _ in REFERENCE.values() for text in (full, full)] + [
    PLAIN_REFERENCE[0],
    CHATML_RENDERING,
]


def reference_for(name):
    return PLAIN_REFERENCE if name == "plain" else REFERENCE[name]


def record_for(name):
    return CAPTION_RECORD if name == "plain" else RECORD


def llama_like_tokenizer(split_punctuation=True, corpus=CORPUS):
    """SentencePiece-style BPE (▁ for spaces) whose post-processor prepends <s>, like Llama.

    Like Llama's vocabulary, no piece mixes letters with punctuation or newlines unless
    `split_punctuation` is off (then a small corpus teaches merges such as "\nThe").
    """
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    metaspace = pre_tokenizers.Metaspace(prepend_scheme="first")
    tokenizer.pre_tokenizer = (
        pre_tokenizers.Sequence(
            [
                metaspace,
                pre_tokenizers.Punctuation(behavior="isolated"),
                pre_tokenizers.Split("\n", behavior="isolated"),
            ]
        )
        if split_punctuation
        else metaspace
    )
    tokenizer.decoder = decoders.Metaspace(prepend_scheme="first")
    specials = ["<unk>", "<s>", "</s>", "<image>"]
    tokenizer.train_from_iterator(
        corpus, trainers.BpeTrainer(vocab_size=400, special_tokens=specials, show_progress=False)
    )
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tokenizer.token_to_id("<s>"))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        extra_special_tokens=["<image>"],
    )


def byte_level_tokenizer(trim_offsets):
    """GPT-2/Qwen2-style byte-level BPE: no BOS, ChatML markers as special tokens."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>"]
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(CORPUS, trainer)
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=trim_offsets)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|endoftext|>",
        extra_special_tokens=["<|im_start|>", "<|im_end|>", "<image>"],
    )


@pytest.fixture(scope="module")
def tokenizers():
    return {
        "llama_like": llama_like_tokenizer(),
        "byte_level": byte_level_tokenizer(trim_offsets=False),
        "byte_level_trimmed": byte_level_tokenizer(trim_offsets=True),
    }


TOKENIZER_KINDS = ["llama_like", "byte_level", "byte_level_trimmed"]


def trained_runs(encoded):
    """Consecutive runs of trained token ids."""
    runs, current = [], []
    for token_id, label in zip(encoded.input_ids, encoded.labels):
        if label == IGNORE_INDEX:
            if current:
                runs.append(current)
            current = []
        else:
            assert label == token_id
            current.append(token_id)
    return runs + [current] if current else runs


# --- rendering ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", BUILTIN)
def test_rendering_equals_reference_string(name):
    full, _, pieces = reference_for(name)
    text, spans = render_text(name, messages_from_llava(record_for(name)))
    assert text == full
    assert [text[start:end] for start, end in spans] == pieces


@pytest.mark.parametrize("name", BUILTIN)
def test_generation_prompt_ends_with_assistant_prefix(name):
    full, prompt, pieces = reference_for(name)
    messages = messages_from_llava(record_for(name))[:-1]
    text, spans = render_text(name, messages, add_generation_prompt=True)
    assert text == prompt
    assert full.startswith(text)
    assert [text[start:end] for start, end in spans] == pieces[:-1]


def test_generation_prompt_suffixes():
    messages = [{"role": "user", "content": "Hi?"}]
    assert render_text("vicuna_v1", messages, True)[0].endswith("USER: Hi? ASSISTANT:")
    assert render_text("llava_v0", messages, True)[0].endswith("###Human: Hi?###Assistant:")


def test_image_placeholder_is_moved_to_the_front():
    record = [dict(turn) for turn in RECORD]
    record[0]["value"] = "What are the colors of the bus?\n<image>"
    assert render_text("vicuna_v1", messages_from_llava(record))[0] == REFERENCE["vicuna_v1"][0]
    # The caller's messages are not modified.
    assert record[0]["value"] == "What are the colors of the bus?\n<image>"


def test_plain_keeps_only_the_image_and_needs_one_captioned_image():
    assert render_text("plain", messages_from_llava(CAPTION_RECORD))[0] == PLAIN_REFERENCE[0]
    no_image = [{"role": "user", "content": "Describe."}, {"role": "assistant", "content": "A."}]
    with pytest.raises(ConversationError, match="needs an <image>"):
        render_text("plain", no_image)
    with pytest.raises(ConversationError, match="one user turn and one answer"):
        render_text("plain", messages_from_llava(RECORD))
    with pytest.raises(ConversationError, match="no place for a system message"):
        render_text("plain", [{"role": "system", "content": "Be brief."}, *no_image])


def test_every_official_registry_name_is_accepted():
    """The names of the official `conv_templates` (llava/conversation.py), all of them."""
    official = {
        "default", "v0", "v1", "vicuna_v1", "llama_2", "mistral_instruct", "chatml_direct",
        "mistral_direct", "plain", "v0_plain", "llava_v0", "v0_mmtag", "llava_v1", "v1_mmtag",
        "llava_llama_2", "mpt",
    }  # fmt: skip
    assert official <= set(template_names())


def test_mmtag_wraps_every_user_image_and_only_those():
    messages = [
        {"role": "user", "content": "Compare <image> with <image>."},
        {"role": "assistant", "content": "The <image> tag is not an image here."},
    ]
    text, spans = render_text("v1_mmtag", messages)
    assert "USER: Compare <Image><image></Image> with <Image><image></Image>. ASSISTANT:" in text
    # Two images: nothing moves; the answer is trained as written.
    assert text[spans[0][0] : spans[0][1]] == " The <image> tag is not an image here.</s>"


def test_v0_example_exchange_is_never_trained(tokenizers):
    tokenizer = tokenizers["llama_like"]
    encoded = encode(tokenizer, "default", messages_from_llava(RECORD))
    trained = tokenizer.decode([t for t in encoded.labels if t != IGNORE_INDEX])
    assert "Renewable" not in trained and "white and red" in trained


def test_system_message_replaces_the_default():
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi?"},
        {"role": "assistant", "content": "Hello."},
    ]
    assert render_text("vicuna_v1", messages)[0] == "Be brief. USER: Hi? ASSISTANT: Hello.</s>"
    assert (
        render_text("llava_llama_2", messages)[0]
        == "[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi? [/INST] Hello. </s>"
    )


def test_braces_in_text_are_rendered_literally():
    messages = [
        {"role": "user", "content": "Fill {answer} and {user}?"},
        {"role": "assistant", "content": "{system}"},
    ]
    text, _ = render_text("vicuna_v1", messages)
    assert text.endswith("USER: Fill {answer} and {user}? ASSISTANT: {system}</s>")


def test_stop_strings():
    expected = {
        "vicuna_v1": "</s>",
        "llava_v1": "</s>",
        "llava_llama_2": "</s>",
        "mistral_instruct": "</s>",
        "llava_v0": "###",
        "v0": "###",
        "v0_mmtag": "###",
        "v1_mmtag": "</s>",
        "llama_2": "</s>",
        "chatml_direct": "<|im_end|>",
        "mpt": "<|im_end|>",
        "plain": "\n",
        "tokenizer": None,
    }
    assert {name: get_template(name).stop_str for name in expected} == expected


def test_unknown_template_names_the_known_ones():
    for alias, canonical in ALIASES.items():
        assert get_template(alias) is get_template(canonical)
    assert set(template_names()) >= {*BUILTIN, *ALIASES, "tokenizer"}
    with pytest.raises(ValueError, match=r"unknown conversation template 'vicuna_v9'; known: "):
        get_template("vicuna_v9")
    with pytest.raises(ValueError, match="chatml_direct"):
        render_text("nope", messages_from_llava(RECORD))


# --- turn order -----------------------------------------------------------------------------


def test_messages_from_llava_maps_roles():
    messages = messages_from_llava([{"from": "system", "value": "S"}, *RECORD[:2]])
    assert [m["role"] for m in messages] == ["system", "user", "assistant"]
    assert messages[2] == {"role": "assistant", "content": "The bus is white and red."}
    mixed = [{"from": "user", "value": "Q"}, {"from": "assistant", "value": "A"}]
    assert [m["role"] for m in messages_from_llava(mixed)] == ["user", "assistant"]


@pytest.mark.parametrize(
    ("conversations", "message"),
    [
        ([RECORD[1], RECORD[0]], r"turn 0: expected a 'user' turn, got 'assistant'"),
        ([RECORD[0], RECORD[1], RECORD[3]], r"turn 2: expected a 'user' turn, got 'assistant'"),
        ([RECORD[0], RECORD[2]], r"turn 1: expected a 'assistant' turn, got 'user'"),
        ([RECORD[0], {"from": "system", "value": "S"}], r"turn 1: expected a 'assistant'"),
        ([RECORD[0], {"from": "gpt", "value": 3}], r"turn 1: the text must be a string, got int"),
        ([RECORD[0], {"from": "bot", "value": "A"}], r"turn 1: unknown 'from' value 'bot'"),
        ([RECORD[0], {"value": "A"}], r"turn 1: expected an object with 'from' and 'value'"),
        ([], "no turns"),
    ],
)
def test_broken_turns_name_the_turn(conversations, message):
    with pytest.raises(ConversationError, match=message):
        messages_from_llava(conversations)


def test_conversation_must_end_where_the_mode_expects():
    messages = messages_from_llava(RECORD)
    with pytest.raises(ConversationError, match="turn 2: a training conversation must end"):
        render_text("vicuna_v1", messages[:3])
    with pytest.raises(ConversationError, match="turn 3: a generation prompt needs"):
        render_text("vicuna_v1", messages, add_generation_prompt=True)


# --- labels ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", TOKENIZER_KINDS)
@pytest.mark.parametrize("name", BUILTIN)
def test_only_answers_and_separators_are_trained(tokenizers, kind, name):
    tokenizer = tokenizers[kind]
    _, _, pieces = reference_for(name)
    encoded = encode(tokenizer, name, messages_from_llava(record_for(name)))
    assert len(encoded.input_ids) == len(encoded.labels)
    assert tokenizer.unk_token_id not in encoded.input_ids
    runs = trained_runs(encoded)
    assert len(runs) == len(pieces)
    full_text = reference_for(name)[0]
    for run, piece in zip(runs, pieces):
        # Tokenizers differ only in whether a leading "▁"/space decodes as a space.
        decoded = tokenizer.decode(run, clean_up_tokenization_spaces=False).strip()
        assert decoded.startswith(piece.strip())
        # Only the last token may run past the separator: byte-level BPE without a special
        # "</s>" merges "</s><s>" as "</", "s", "><". Its tail is the text that follows.
        overhang = decoded[len(piece.strip()) :]
        if kind == "llama_like" or not piece.endswith("</s>"):
            assert overhang == ""
        else:
            following = full_text[full_text.index(piece) + len(piece) :]
            assert following.startswith(overhang)
            assert len(overhang) < len(tokenizer.decode(run[-1:]))
    trained = sum(label != IGNORE_INDEX for label in encoded.labels)
    assert trained == sum(len(run) for run in runs)
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    assert encoded.input_ids.count(image_id) == 1
    assert encoded.labels[encoded.input_ids.index(image_id)] == IGNORE_INDEX


@pytest.mark.parametrize("kind", TOKENIZER_KINDS)
@pytest.mark.parametrize("name", BUILTIN)
def test_generation_prompt_ids_are_a_prefix_of_the_full_ids(tokenizers, kind, name):
    tokenizer = tokenizers[kind]
    messages = messages_from_llava(record_for(name))
    full = encode(tokenizer, name, messages)
    prompt = encode(tokenizer, name, messages[:-1], add_generation_prompt=True)
    assert full.input_ids[: len(prompt.input_ids)] == prompt.input_ids
    assert full.labels[: len(prompt.labels)] == prompt.labels
    # Everything after the generation prompt is the last answer, and all of it is trained.
    assert IGNORE_INDEX not in full.labels[len(prompt.labels) :]


def test_special_tokens_follow_the_tokenizer(tokenizers):
    messages = messages_from_llava(RECORD)
    llama = tokenizers["llama_like"]
    encoded = encode(llama, "vicuna_v1", messages)
    assert encoded.input_ids[0] == llama.bos_token_id
    assert encoded.labels[0] == IGNORE_INDEX
    assert encoded.input_ids.count(llama.bos_token_id) == 1
    # Each "</s>" in the text is the single EOS id, trained as the end of an answer.
    eos_positions = [i for i, t in enumerate(encoded.input_ids) if t == llama.eos_token_id]
    assert len(eos_positions) == 2
    assert all(encoded.labels[i] == llama.eos_token_id for i in eos_positions)

    byte_level = tokenizers["byte_level"]
    encoded = encode(byte_level, "chatml_direct", messages)
    assert encoded.input_ids[0] == byte_level.convert_tokens_to_ids("<|im_start|>")
    im_end = byte_level.convert_tokens_to_ids("<|im_end|>")
    trained_im_ends = [
        i
        for i, t in enumerate(encoded.input_ids)
        if t == im_end and encoded.labels[i] != IGNORE_INDEX
    ]
    assert len(trained_im_ends) == 2  # of 5 <|im_end|>: only those closing answers


def test_format_trained_shows_the_trained_text(tokenizers):
    tokenizer = tokenizers["byte_level"]
    encoded = encode(tokenizer, "vicuna_v1", messages_from_llava(RECORD))
    expected = (
        SYSTEM_USER + " USER: " + Q1 + " ASSISTANT:[[ The bus is white and red.</s>]]"
        "USER: " + Q2 + " ASSISTANT:[[ An advertisement.</s>]]"
    )
    assert format_trained(tokenizer, encoded.input_ids, encoded.labels, color=False) == expected
    coloured = format_trained(tokenizer, encoded.input_ids, encoded.labels)
    assert "\033[32m An advertisement.</s>\033[0m" in coloured
    llama = tokenizers["llama_like"]
    encoded = encode(llama, "llava_llama_2", messages_from_llava(RECORD))
    view = format_trained(llama, encoded.input_ids, encoded.labels, color=False)
    # The space that SentencePiece stores as "▁" on the first answer word shows in place.
    assert view.endswith(
        "bus? [/INST][[ The bus is white and red. </s>]]<s>[INST] " + Q2 + " [/INST]"
        "[[ An advertisement. </s>]]"
    )
    with pytest.raises(ValueError, match="labels"):
        format_trained(tokenizer, encoded.input_ids, encoded.labels[:-1])


# --- the tokenizer's own chat template ------------------------------------------------------


def with_chat_template(tokenizer, template):
    tokenizer = byte_level_tokenizer(trim_offsets=False) if tokenizer is None else tokenizer
    tokenizer.chat_template = template
    return tokenizer


def test_tokenizer_template_renders_and_trains_the_answers():
    tokenizer = with_chat_template(None, CHATML_TEMPLATE)
    messages = messages_from_llava(RECORD)
    text, _ = render_text("tokenizer", messages, tokenizer=tokenizer)
    assert text == CHATML_RENDERING
    encoded = encode(tokenizer, "tokenizer", messages)
    runs = [tokenizer.decode(run) for run in trained_runs(encoded)]
    assert runs == ["The bus is white and red.<|im_end|>\n", "An advertisement.<|im_end|>\n"]
    prompt = encode(tokenizer, "tokenizer", messages[:-1], add_generation_prompt=True)
    assert tokenizer.decode(prompt.input_ids).endswith(Q2 + "<|im_end|>\n<|im_start|>assistant\n")
    assert encoded.input_ids[: len(prompt.input_ids)] == prompt.input_ids


def test_tokenizer_template_without_prefix_property_is_refused():
    rewrites_last_turn = (
        "{% for m in messages %}{{ m['role'] + ': ' + m['content'] }}"
        "{% if loop.last %}{{ ' [last]' }}{% endif %}{{ '\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ 'assistant:' }}{% endif %}"
    )
    tokenizer = with_chat_template(None, rewrites_last_turn)
    with pytest.raises(ConversationError, match="turn 1: .* lacks the prefix property"):
        encode(tokenizer, "tokenizer", messages_from_llava(RECORD))


def test_tokenizer_template_needs_a_chat_template(tokenizers):
    messages = messages_from_llava(RECORD)
    with pytest.raises(ConversationError, match="has no chat_template"):
        encode(tokenizers["byte_level"], "tokenizer", messages)
    with pytest.raises(ValueError, match="needs the tokenizer"):
        render_text("tokenizer", messages)


def test_bos_written_by_the_chat_template_is_not_doubled():
    tokenizer = with_chat_template(
        llama_like_tokenizer(),
        "{{ '<s>' }}{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '</s>' }}"
        "{% endfor %}{% if add_generation_prompt %}{{ 'assistant:' }}{% endif %}",
    )
    encoded = encode(tokenizer, "tokenizer", messages_from_llava(RECORD))
    assert encoded.input_ids.count(tokenizer.bos_token_id) == 1
    assert encoded.input_ids[0] == tokenizer.bos_token_id


def test_token_running_from_prompt_into_answer_is_refused():
    chatml = [REFERENCE[name][0] for name in ("chatml_direct", "mpt")]
    merging = llama_like_tokenizer(split_punctuation=False, corpus=chatml * 2)
    pattern = r"token '.*assistant\\nThe' \(characters \d+-\d+\) runs from the prompt into"
    with pytest.raises(ConversationError, match=pattern):
        encode(merging, "chatml_direct", messages_from_llava(RECORD))


def test_tokens_added_by_the_tokenizer_are_never_trained():
    # A completion-only template: the first answer starts at character 0, where BOS sits too.
    tokenizer = with_chat_template(
        llama_like_tokenizer(),
        "{% for m in messages %}{% if m['role'] == 'assistant' %}{{ m['content'] + '</s>' }}"
        "{% endif %}{% endfor %}",
    )
    encoded = encode(tokenizer, "tokenizer", messages_from_llava(RECORD))
    assert encoded.input_ids[0] == tokenizer.bos_token_id
    assert encoded.labels[0] == IGNORE_INDEX
    assert encoded.labels[1:] == encoded.input_ids[1:]

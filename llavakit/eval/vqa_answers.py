"""Answer normalisation and matching of the VQA-style protocols (EvalAI and its two descendants).

Both text-VQA protocols that LLaVA-family papers report normalise answers the way the VQA
challenge's EvalAI server does, with the same quirks, which change scores and so are kept:

- punctuation: each of ``; / [ ] " { } ( ) = + \\ _ - > < @ ` , ? !`` is deleted when the
  text has it next to a space (or has a digit-comma-digit run anywhere), else replaced by a space;
- periods not followed by a digit are deleted, but only the first 32 of them (the reference
  passes `re.UNICODE`, whose value is 32, where `re.sub` expects its `count`);
- words: lower-cased, split on whitespace, number words "none", "zero" … "ten" become digits,
  the articles "a", "an", "the" are dropped, and apostrophe-less contractions ("dont") get
  their apostrophe back ("don't").

The two protocols differ before and after that:

- `llava15_normalize` (haotian-liu/LLaVA `llava/eval/m4c_evaluator.py`, `EvalAIAnswerProcessor`)
  first lower-cases, deletes every "," and "?", and splits "'s" off its word ("it's" → "it 's");
  `vqa_accuracy` then gives a prediction the VQA soft score: over the 10 ways of leaving one
  human answer out, min(1, matching answers among the other 9 / 3), averaged — a prediction
  must equal a normalised human answer exactly.
- `multimodalocr_normalize` (Yuliang-Liu/MultimodalOCR `eval.py`, `VQAEval`, as of June 2023,
  the version behind the LLaVAR paper's table) skips that first step; `has_whole_answer` counts
  a prediction right (1/0) when some normalised ground-truth answer occurs in the normalised
  prediction between regex word boundaries (`\\b`), so "cat" is found in "a cat." but not in
  "category". A ground truth that normalises to nothing (e.g. "the") matches any prediction
  with a word character in it, as in the reference.
"""

from __future__ import annotations

import re
from types import MappingProxyType

_PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<")
_PUNCTUATION += ("@", "`", ",", "?", "!")
_PERIOD = re.compile(r"\.(?!\d)")
_PERIODS_REMOVED = 32
"""How many periods the reference actually deletes (its `count` argument is `re.UNICODE`)."""
_DIGIT_COMMA_DIGIT = {
    "llava15": re.compile(r"(?<=\d),+(?=\d)"),
    "multimodalocr": re.compile(r"\d,\d"),
}
NUMBER_WORDS = MappingProxyType(
    {
        "none": "0",
        "zero": "0",
        "one": "1",
        "two": "2",
        "three": "3",
        "four": "4",
        "five": "5",
        "six": "6",
        "seven": "7",
        "eight": "8",
        "nine": "9",
        "ten": "10",
    }
)
ARTICLES = frozenset({"a", "an", "the"})

# EvalAI's contraction table, one restored form per line followed by the spellings that map to
# it. Two oddities are the table's own: "somebody'd" maps to "somebodyd", and entries spelled
# with a capital I ("Im", "Ive") never apply because words are lower-cased before the lookup
# (they are left out here).
_CONTRACTION_TABLE = """
ain't aint | aren't arent | can't cant | could've couldve | couldn't couldnt
couldn't've couldn'tve couldnt've | didn't didnt | doesn't doesnt | don't dont | hadn't hadnt
hadn't've hadnt've hadn'tve | hasn't hasnt | haven't havent | he'd hed | he'd've hed've he'dve
he's hes | how'd howd | how'll howll | how's hows | isn't isnt | it'd itd
it'd've itd've it'dve | it'll itll | ma'am maam | mightn't mightnt
mightn't've mightnt've mightn'tve | might've mightve | mustn't mustnt | must've mustve
needn't neednt | not've notve | o'clock oclock | oughtn't oughtnt
'ow's'at ow's'at 'ows'at 'ow'sat | shan't shant | she'd've shed've she'dve
should've shouldve | shouldn't shouldnt | shouldn't've shouldnt've shouldn'tve
somebodyd somebody'd | somebody'd've somebodyd've somebody'dve | somebody'll somebodyll
somebody's somebodys | someone'd someoned | someone'd've someoned've someone'dve
someone'll someonell | someone's someones | something'd somethingd
something'd've somethingd've something'dve | something'll somethingll | that's thats
there'd thered | there'd've thered've there'dve | there're therere | there's theres
they'd theyd | they'd've theyd've they'dve | they'll theyll | they're theyre
they've theyve | 'twas twas | wasn't wasnt | we'd've wed've we'dve | we've weve
weren't werent | what'll whatll | what're whatre | what's whats | what've whatve
when's whens | where'd whered | where's wheres | where've whereve | who'd whod
who'd've whod've who'dve | who'll wholl | who's whos | who've whove | why'll whyll
why're whyre | why's whys | won't wont | would've wouldve | wouldn't wouldnt
wouldn't've wouldnt've wouldn'tve | y'all yall | y'all'll yall'll y'allll
y'all'd've yall'd've y'alld've y'all'dve | you'd youd | you'd've youd've you'dve
you'll youll | you're youre | you've youve
"""


def _contractions(table: str) -> MappingProxyType:
    mapping = {}
    for entry in table.replace("\n", " | ").split("|"):
        words = entry.split()
        if words:
            restored, *spellings = words
            mapping.update(dict.fromkeys(spellings, restored))
    return MappingProxyType(mapping)


CONTRACTIONS = _contractions(_CONTRACTION_TABLE)
"""Apostrophe-less spelling → the contraction EvalAI restores."""


def _punctuation(text: str, digit_comma_digit: re.Pattern) -> str:
    """Delete or space out punctuation, then delete periods (the quirks in the docstring)."""
    delete = digit_comma_digit.search(text) is not None
    out = text
    for mark in _PUNCTUATION:
        # The decision reads the text as it came in, so the order of the marks does not matter.
        beside_space = f"{mark} " in text or f" {mark}" in text
        out = out.replace(mark, "" if delete or beside_space else " ")
    return _PERIOD.sub("", out, count=_PERIODS_REMOVED)


def _words(text: str) -> str:
    """Lower-case, number words to digits, articles dropped, contractions restored."""
    words = [NUMBER_WORDS.get(word, word) for word in text.lower().split()]
    return " ".join(CONTRACTIONS.get(word, word) for word in words if word not in ARTICLES)


def llava15_normalize(answer: str) -> str:
    """An answer as LLaVA-1.5's TextVQA evaluation compares it (m4c_evaluator.py)."""
    text = answer.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    text = text.replace("\n", " ").replace("\t", " ").strip()
    return _words(_punctuation(text, _DIGIT_COMMA_DIGIT["llava15"]))


def multimodalocr_normalize(answer: str) -> str:
    """An answer (prediction or ground truth) as MultimodalOCR's VQAEval compares it."""
    text = answer.replace("\n", " ").replace("\t", " ").strip()
    return _words(_punctuation(text, _DIGIT_COMMA_DIGIT["multimodalocr"]))


def vqa_accuracy(prediction: str, human_answers: list[str]) -> float:
    """The VQA soft score (0, 1/3 … 1) of a prediction against exactly 10 human answers."""
    if len(human_answers) != 10:
        raise ValueError(f"VQA accuracy needs 10 human answers, got {len(human_answers)}")
    predicted = llava15_normalize(prediction)
    humans = [llava15_normalize(a) for a in human_answers]
    total = 0.0
    for left_out in range(len(humans)):
        matches = sum(1 for i, h in enumerate(humans) if i != left_out and h == predicted)
        total += min(1.0, matches / 3)
    return total / len(humans)


def has_whole_answer(prediction: str, ground_truths: list[str]) -> bool:
    """True when a normalised ground truth occurs in the normalised prediction as whole words."""
    predicted = multimodalocr_normalize(prediction)
    return any(
        re.search(rf"\b{re.escape(multimodalocr_normalize(truth))}\b", predicted)
        for truth in ground_truths
    )

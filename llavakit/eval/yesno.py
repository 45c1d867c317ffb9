"""Reading a yes/no verdict out of a free-form reply (MME and POPE), three ways.

The official readers, reproduced exactly because they decide the published numbers:

- `pope_official` (haotian-liu/LLaVA `llava/eval/eval_pope.py`): keep the text before the first
  ".", delete every ",", split on single spaces; if one of the pieces is exactly "No", "no" or
  "not" the verdict is no, otherwise yes — an empty reply, "NO", "Nope" or "no!" included.
- `mme_official` (MME's `eval_tool/calculation.py`): lower-case the reply; "yes" or "no"
  exactly, else "yes" if its first four characters contain "yes", else "no" if they contain
  "no", else None (the script's "other", always wrong): "Not sure" is a no, "Absolutely yes"
  has no verdict.

`parse_yes_no` is llavakit's lenient reader (the `lenient` protocols). Models asked "Please
answer yes or no" often add words: "Yes, but only one.", "No.", "There is no dog in the
image." The rule, in order:

1. the first word, when it is "yes" or "no", decides ("Yes, but…" is a yes);
2. otherwise the reply's standalone words decide when they point one way only: "yes" for yes,
   "no", "not" or a contraction ending in "n't" for no ("The image does not show a dog" is a no);
3. otherwise (both kinds, or neither, or an empty reply) there is no verdict: None, which every
   scorer counts as wrong and reports as unparsed.

Text is NFKC-normalised and case-folded first, so "ＹＥＳ" and "YES" read as "yes".
"""

from __future__ import annotations

import re
import unicodedata

_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?")
_NEGATIONS = frozenset({"no", "not"})


def parse_yes_no(reply: str) -> str | None:
    """'yes', 'no', or None when the reply gives no single verdict."""
    text = unicodedata.normalize("NFKC", reply).casefold().replace("\u2019", "'")
    words = _WORD.findall(text)
    if not words:
        return None
    if words[0] in ("yes", "no"):
        return words[0]
    says_yes = "yes" in words
    says_no = any(word in _NEGATIONS or word.endswith("n't") for word in words)
    if says_yes != says_no:
        return "yes" if says_yes else "no"
    return None


def pope_official(reply: str) -> str:
    """'yes' or 'no' as eval_pope.py decides (never undecided)."""
    first_sentence = reply.split(".")[0]
    pieces = first_sentence.replace(",", "").split(" ")
    return "no" if any(p in ("No", "not", "no") for p in pieces) else "yes"


def mme_official(reply: str) -> str | None:
    """'yes', 'no', or None ("other") as MME's calculation.py decides."""
    text = reply.lower()
    if text in ("yes", "no"):
        return text
    if "yes" in text[:4]:
        return "yes"
    return "no" if "no" in text[:4] else None


def yes_no_label(record: dict, fields: tuple[str, ...], path: object) -> str:
    """The ground-truth 'yes'/'no' stored in the first present field of `fields`."""
    for field in fields:
        if field in record:
            value = record[field]
            if isinstance(value, str) and value.strip().casefold() in ("yes", "no"):
                return value.strip().casefold()
            raise ValueError(
                f"{path}: question {record.get('question_id')!r}: field '{field}' must be "
                f"'yes' or 'no', got {value!r}"
            )
    raise ValueError(
        f"{path}: question {record.get('question_id')!r} has no ground truth; expected a "
        f"field named {' or '.join(repr(f) for f in fields)} holding 'yes' or 'no'"
    )

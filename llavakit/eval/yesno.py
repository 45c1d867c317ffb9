"""Reading a yes/no verdict out of a free-form reply (MME and POPE).

Models asked "Please answer yes or no" often add words: "Yes, but only one.", "No.", "There is
no dog in the image." The rule, in order:

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

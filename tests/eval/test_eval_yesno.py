"""The yes/no reader shared by MME and POPE."""

from __future__ import annotations

import pytest

from llavakit.eval.yesno import parse_yes_no


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("Yes", "yes"),
        ("no.", "no"),
        ("Yes, but only one of them.", "yes"),
        ("No, yes... I mean no", "no"),
        ("There is no dog in the image.", "no"),
        ("The image does not show a cat.", "no"),
        ("It isn\u2019t red.", "no"),
        ("I would say yes.", "yes"),
        ("ＹＥＳ", "yes"),
        ("Not sure, maybe yes", None),
        ("", None),
        ("   ", None),
        ("Oui", None),
        ("The answer is 42.", None),
        ("Yesterday it rained", None),
    ],
)
def test_parse_yes_no(reply, expected):
    assert parse_yes_no(reply) == expected

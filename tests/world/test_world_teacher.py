"""The symbolic teacher: exact output format, and every answer true to the annotation.

The checks below recompute each answer from the annotation with their own simple logic (centres
for left/right, plain counting) rather than through the teacher's helpers.
"""

from __future__ import annotations

import re

import pytest

from llavakit.teacher_protocol import TeacherRequest
from llavakit.world.annotations import load_split
from llavakit.world.phrasing import QUESTIONS
from llavakit.world.teacher import SymbolicTeacher
from llavakit.world.vocabulary import CATEGORIES, COLOUR_NAMES, NUMBER_WORDS, plural

SINGULAR = {plural(c): c for c in CATEGORIES}
NUMBERS = {w: i for i, w in enumerate(NUMBER_WORDS)} | {"no": 0}
FORBIDDEN = ("ocr", "caption", "bounding box", "coordinate")


def parse_pairs(text: str) -> list[tuple[str, str]]:
    blocks = text.split("\n===\n")
    assert len(blocks) % 2 == 0, text
    pairs = []
    for q, a in zip(blocks[::2], blocks[1::2]):
        assert q.startswith("Question:\n") and a.startswith("Answer:\n"), text
        q, a = q[len("Question:\n") :], a[len("Answer:\n") :]
        assert q.strip() and a.strip() and "===" not in q + a
        pairs.append((q, a))
    return pairs


def match_form(q: str, canonical_only: bool = False) -> tuple[str, dict[str, str]] | None:
    """The question's form and slots; where wordings overlap ("How many {plural} are there..."
    and "How many {color} objects are there..."), the one with the least slot text wins."""
    matches = []
    for form, wordings in QUESTIONS.items():
        for wording in wordings[:1] if canonical_only else wordings:
            pattern = re.escape(wording)
            pattern = re.sub(r"\\\{(\w+)\\\}", lambda m: f"(?P<{m.group(1)}>.+?)", pattern)
            found = re.fullmatch(pattern, q)
            if found:
                matches.append((sum(map(len, found.groupdict().values())), form, found.groupdict()))
    if not matches:
        return None
    _, form, slots = min(matches, key=lambda m: m[0])
    return form, slots


def first(words: list[str], choices) -> str | None:
    return next((w for w in words if w in choices), None)


def words_of(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def first_number(text: str) -> int | None:
    for word in words_of(text):
        if word.isdigit():
            return int(word)
        if word in NUMBERS:
            return NUMBERS[word]
    return None


class Scene:
    """The annotation as plain facts, for independent checking."""

    def __init__(self, context: dict):
        self.objects = [
            {
                "category": i["category"],
                "color": i["attributes"]["color"],
                "size": i["attributes"]["size"],
                "box": i["bbox"],
                "name": f"{i['attributes']['color']} {i['category']}",
            }
            for i in context["instances"]
        ]

    def named(self, name: str) -> dict:
        matches = [o for o in self.objects if o["name"] == name]
        assert len(matches) == 1, f"{name!r} does not name exactly one object"
        return matches[0]

    def count(self, **where) -> int:
        return sum(all(o[k] == v for k, v in where.items()) for o in self.objects)


def check_conversation_pair(scene: Scene, q: str, a: str) -> str:
    matched = match_form(q)
    assert matched, f"unknown question form: {q}"
    form, slots = matched
    words = words_of(a)
    if form == "existence":
        name = re.sub(r"^an? ", "", slots["thing"])
        assert first(words, ("yes", "no")) == ("yes" if scene.count(name=name) else "no"), (q, a)
    elif form == "colour":
        (obj,) = [o for o in scene.objects if o["category"] == slots["category"]]
        assert first(words, COLOUR_NAMES) == obj["color"], (q, a)
    elif form == "count":
        assert first_number(a) == scene.count(category=SINGULAR[slots["plural"]]), (q, a)
    elif form == "count_all":
        assert first_number(a) == len(scene.objects), (q, a)
    elif form == "count_colour":
        assert first_number(a) == scene.count(color=slots["color"]), (q, a)
    elif form in ("horizontal", "vertical"):
        one, other = scene.named(slots["a"]), scene.named(slots["b"])
        axis = 0 if form == "horizontal" else 1
        centre = lambda o: (o["box"][axis] + o["box"][axis + 2]) / 2  # noqa: E731
        assert (
            one["box"][axis + 2] < other["box"][axis] or other["box"][axis + 2] < one["box"][axis]
        )
        before = centre(one) < centre(other)
        expected = (
            ("left" if before else "right") if axis == 0 else ("above" if before else "below")
        )
        assert first(words, ("left", "right", "above", "below")) == expected, (q, a)
    elif form == "size":
        assert first(words, ("small", "large")) == scene.named(slots["a"])["size"], (q, a)
    else:
        raise AssertionError(f"unexpected form {form} in a scene conversation: {q}")
    return form


def ask(teacher, task: str, context: dict, key: str) -> str:
    (result,) = list(teacher.complete([TeacherRequest(key, task, [], context)]))
    assert result.ok and result.error is None, result.error
    assert result.key == key
    for word in FORBIDDEN:
        assert word not in result.text.lower()
    return result.text


@pytest.fixture(scope="module")
def train(world_dir):
    return load_split(world_dir, "train")


def test_conversations_have_three_to_six_true_pairs(train, make_context):
    teacher = SymbolicTeacher()
    forms, lengths = set(), set()
    for image in train.scenes():
        context = make_context(image)
        scene = Scene(context)
        for key in ("a", "b", "c"):
            pairs = parse_pairs(ask(teacher, "conversation", context, f"{image.image_id}-{key}"))
            lengths.add(len(pairs))
            assert 3 <= len(pairs) <= 6
            assert len({q for q, _ in pairs}) == len(pairs)
            for q, a in pairs:
                forms.add(check_conversation_pair(scene, q, a))
    assert forms >= {"existence", "colour", "count", "count_all", "horizontal", "vertical", "size"}
    assert len(lengths) >= 3


def test_detail_mentions_every_object_and_the_background(train, make_context):
    teacher = SymbolicTeacher()
    for image in train.scenes():
        context = make_context(image)
        text = ask(teacher, "detail", context, str(image.image_id))
        assert "\n" not in text and "Question:" not in text
        lowered = text.lower()
        assert image.background in lowered
        for obj in image.objects:
            full = f"{obj.size} {obj.color} {obj.category}"
            same = sum(
                1
                for o in image.objects
                if (o.size, o.color, o.category) == (obj.size, obj.color, obj.category)
            )
            assert lowered.count(full) >= same, (full, text)
        assert first_number(text) == len(image.objects)
        scene = Scene(context)
        for a, relation, b in re.findall(
            r"The (\w+ \w+) is (to the left of|to the right of|above|below) the (\w+ \w+)\.", text
        ):
            check_conversation_pair(
                scene,
                f"Is the {a} {'to the left or right of' if 'the' in relation else 'above or below'} the {b}?",
                relation,
            )


def test_complex_reasoning_answers_are_right(train, make_context):
    teacher = SymbolicTeacher()
    seen = set()
    for image in train.scenes():
        context = make_context(image)
        scene = Scene(context)
        for key in ("x", "y", "z", "w"):
            ((q, a),) = parse_pairs(ask(teacher, "complex", context, f"{image.image_id}-{key}"))
            seen.add(check_complex(scene, q, a))
    assert len(seen) >= 6, seen


def check_complex(scene: Scene, q: str, a: str) -> str:
    last = a.rsplit(".", 2)[-2] if a.endswith(".") else a
    if m := re.fullmatch(r"Are there more (\w+) or more (\w+) in the image\?", q):
        x, y = (scene.count(category=SINGULAR[p]) for p in m.groups())
        if x == y:
            assert "as many" in last
        else:
            assert last.endswith(f"there are more {m.group(1) if x > y else m.group(2)}")
        return "compare"
    if m := re.fullmatch(
        r"If the (\w+ \w+) were taken away, how many objects would be left in the image\?", q
    ):
        scene.named(m.group(1))
        assert re.search(rf"= {len(scene.objects) - 1}\b", a), (q, a)
        return "remove"
    if m := re.fullmatch(
        r"If every (\w+) object were painted (\w+), how many \w+ objects would there be\?", q
    ):
        total = scene.count(color=m.group(1)) + scene.count(color=m.group(2))
        assert re.search(rf"= {total} \w+ objects?\.$", a), (q, a)
        return "repaint"
    if m := re.fullmatch(
        r"Which object is (?:furthest to the|closest to the) (left|right|top|bottom)(?: of the image)?\?",
        q,
    ):
        name = re.search(r"So the (\w+ \w+) is", a).group(1)
        side = {"left": 0, "top": 1, "right": 2, "bottom": 3}[m.group(1)]
        values = [o["box"][side] for o in scene.objects]
        best = min(values) if side < 2 else max(values)
        assert scene.named(name)["box"][side] == best, (q, a)
        return "extreme"
    if m := re.fullmatch(
        r"What would happen to the number of (\w+) if one more \w+ were added\?", q
    ):
        k = scene.count(category=SINGULAR[m.group(1)])
        assert f"= {k + 1}," in a and k >= 1
        return "add"
    if q == "Are there more large objects or more small objects in the image?":
        large, small = scene.count(size="large"), scene.count(size="small")
        assert first_number(a) == large
        if large == small:
            assert "same" in last
        else:
            assert last.endswith(f"more {'large' if large > small else 'small'} objects")
        return "sizes"
    if m := re.fullmatch(
        r"If the (\w+ \w+) moved to the other side of the (\w+ \w+), would it be on the left or on the right of the \w+ \w+\?",
        q,
    ):
        one, other = scene.named(m.group(1)), scene.named(m.group(2))
        now = "left" if one["box"][2] < other["box"][0] else "right"
        after = "right" if now == "left" else "left"
        assert a.endswith(f"would put it to the {after} of the {m.group(2)}."), (q, a)
        return "move"
    raise AssertionError(f"unknown reasoning question: {q}")


def test_llavar_conversations_are_grounded_in_the_text(train):
    teacher = SymbolicTeacher()
    forms = set()
    for image in train.text_images():
        lines = image.lines()
        words = " ".join(lines).split()
        (board,) = image.objects
        with_board = {
            "ocr": lines,
            "caption": image.captions[0],
            "instances": [
                {
                    "category": board.category,
                    "bbox": [0, 0, 1, 1],
                    "attributes": {"color": board.color},
                }
            ],
        }
        for key, context in (
            ("plain", {"ocr": lines, "caption": image.captions[0]}),
            ("board", with_board),
        ):
            for round_ in range(3):
                text = ask(
                    teacher, "llavar_conversation", context, f"{image.image_id}-{key}-{round_}"
                )
                pairs = parse_pairs(text)
                assert 3 <= len(pairs) <= 5
                for q, a in pairs:
                    forms.add(check_reading_pair(q, a, lines, words, board, image.captions[0]))
    assert forms >= {"read_word", "read_all", "read_first_line", "line_count", "has_word", "colour"}


def check_reading_pair(q, a, lines, words, board, caption) -> str:
    if q == "Describe the image briefly.":
        assert a == caption
        return "describe"
    if q == "What is the title of the book?":
        assert board.category == "book cover" and f'"{lines[0]}"' in a
        return "title"
    matched = match_form(q)
    assert matched, f"unknown question: {q}"
    form, slots = matched
    for slot in ("kind", "category"):
        if slot in slots:
            assert slots[slot] in (board.category, "image")
    quoted = re.findall(r'"([^"]+)"', a)
    if form == "read_word":
        assert len(words) == 1 and quoted == words
    elif form == "read_all":
        assert quoted == [" ".join(lines)]
    elif form == "read_first_line":
        assert quoted == [lines[0]]
    elif form == "read_last_line":
        assert quoted == [lines[-1]]
    elif form == "line_count":
        assert first_number(a) == len(lines)
    elif form == "word_count":
        assert first_number(a) == len(words) and quoted == words
    elif form == "has_word":
        present = slots["word"].lower() in {w.lower() for w in words}
        assert first(words_of(a), ("yes", "no")) == ("yes" if present else "no"), (q, a)
    elif form == "colour":
        assert first(words_of(a), COLOUR_NAMES) == board.color
    else:
        raise AssertionError(f"unexpected form {form}: {q}")
    return form


def test_coloured_lines_are_named_when_the_context_gives_colours():
    teacher = SymbolicTeacher()
    context = {
        "ocr": ["OPEN", "LATE"],
        "caption": "A black poster.",
        "texts": [
            {"text": "OPEN", "level": "line", "attributes": {"color": "red"}},
            {"text": "LATE", "level": "line", "attributes": {"color": "white"}},
        ],
    }
    answers = {}
    for key in range(40):
        for q, a in parse_pairs(ask(teacher, "llavar_conversation", context, str(key))):
            answers[q] = a
    assert (
        answers["What is written in red on the poster?"]
        == '"OPEN" is written in red on the poster.'
    )
    assert (
        answers["What is written in white on the poster?"]
        == '"LATE" is written in white on the poster.'
    )


def test_same_key_same_text_other_keys_vary(train, make_context):
    teacher = SymbolicTeacher()
    context = make_context(max(train.scenes(), key=lambda image: len(image.objects)))
    first_text = ask(teacher, "conversation", context, "k1")
    assert first_text == ask(teacher, "conversation", context, "k1")
    assert len({ask(teacher, "conversation", context, f"k{i}") for i in range(8)}) >= 6
    assert len({ask(teacher, "detail", context, f"k{i}") for i in range(8)}) >= 3


def test_training_data_asks_every_benchmark_question_form_in_its_exact_wording(train, make_context):
    from llavakit.world.benchmark import build_benchmark

    teacher = SymbolicTeacher()
    asked = set()
    for image in train.scenes():
        context = make_context(image)
        for key in range(4):
            text = ask(teacher, "conversation", context, f"{image.image_id}/{key}")
            asked.update(q for q, _ in parse_pairs(text))
    for image in train.text_images():
        context = {"ocr": image.lines(), "caption": image.captions[0]}
        for key in range(6):
            text = ask(teacher, "llavar_conversation", context, f"{image.image_id}/{key}")
            asked.update(q for q, _ in parse_pairs(text))
    taught = [match_form(q, canonical_only=True) for q in asked]
    taught_forms = {found[0] for found in taught if found}
    benchmark = [q for q in build_benchmark(train) if q.category != "detail"]
    benchmark_forms = {match_form(q.text, canonical_only=True)[0] for q in benchmark}
    assert benchmark_forms == {
        "existence",
        "colour",
        "count",
        "count_all",
        "horizontal",
        "vertical",
        "read_word",
        "read_first_line",
    }
    assert benchmark_forms <= taught_forms, benchmark_forms - taught_forms


def test_requests_the_teacher_cannot_answer_fail_with_a_reason():
    teacher = SymbolicTeacher()
    assert teacher.name == "symbolic-world-teacher"
    requests = [
        TeacherRequest("j", "judge", [], {}),
        TeacherRequest("e", "conversation", [], {"instances": []}),
        TeacherRequest(
            "b", "detail", [], {"instances": [{"category": "circle", "bbox": [0, 0, 2, 1]}]}
        ),
        TeacherRequest("o", "llavar_conversation", [], {"ocr": [" "], "caption": "x"}),
    ]
    results = {r.key: r for r in teacher.complete(requests)}
    assert not any(r.ok for r in results.values())
    assert "not supported" in results["j"].error
    assert "no 'instances'" in results["e"].error
    assert "instances[0]" in results["b"].error and "bbox" in results["b"].error
    assert "no text" in results["o"].error
    assert all(r.prompt_tokens == 0 and r.completion_tokens == 0 for r in results.values())


def test_instances_without_attributes_still_get_true_answers():
    teacher = SymbolicTeacher()
    context = {
        "captions": ["Two dogs and a cat."],
        "instances": [
            {"category": "dog", "bbox": [0.0, 0.1, 0.2, 0.3]},
            {"category": "dog", "bbox": [0.5, 0.1, 0.7, 0.3]},
            {"category": "cat", "bbox": [0.8, 0.6, 0.95, 0.9]},
        ],
    }
    for key in range(10):
        for q, a in parse_pairs(ask(teacher, "conversation", context, str(key))):
            if q.startswith("How many dogs"):
                assert first_number(a) == 2
            if q.startswith("How many objects"):
                assert first_number(a) == 3
            if "cat" in q and q.startswith("Is there"):
                assert a.startswith("Yes")

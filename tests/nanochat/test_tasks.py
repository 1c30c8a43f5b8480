"""Synthetic tasks: seeded determinism, answers that are really right, held-out items disjoint
from training ones, and the exact-match accuracy count."""
import re

import pytest

from nanochat import tasks


def test_same_seed_same_items_other_seed_other_items():
    assert tasks.generate(200, seed=3) == tasks.generate(200, seed=3)
    assert tasks.generate(200, seed=3) != tasks.generate(200, seed=4)


def test_word_list_is_common_lowercase_words_in_a_fixed_order():
    words = tasks.word_list()
    assert len(words) == tasks.N_WORDS == len(set(words))
    assert all(re.fullmatch(r"[a-z]{3,7}", w) for w in words)
    assert words[0] == "the"


def _recompute(question):
    """The answer, worked out independently of nanochat.tasks from the question's text."""
    if m := re.fullmatch(r'Spell the word "([a-z]+)" letter by letter\.', question):
        return "-".join(list(m[1]))
    if m := re.fullmatch(r'How many times does the letter "([a-z])" appear in "([a-z]+)"\?', question):
        return str(sum(c == m[1] for c in m[2]))
    if m := re.fullmatch(r'Reverse the word "([a-z]+)"\.', question):
        return "".join(reversed(m[1]))
    if m := re.fullmatch(r"What is (\d+) \+ (\d+)\?", question):
        return str(int(m[1]) + int(m[2]))
    raise AssertionError(f"unrecognised question {question!r}")


@pytest.mark.parametrize("held_out", [False, True])
def test_every_answer_is_right(held_out):
    items = tasks.generate(2000, seed=0, held_out=held_out)
    assert {item["task"] for item in items} == set(tasks.TASK_NAMES)
    for item in items:
        user, assistant = item["messages"]
        assert (user["role"], assistant["role"]) == ("user", "assistant")
        assert assistant["content"] == _recompute(user["content"]), item


def test_counting_answers_are_not_mostly_one():
    answers = [item["messages"][1]["content"] for item in tasks.generate(3000, seed=1, tasks=("count",))]
    # a model that always says "1" must not look good
    assert answers.count("1") / len(answers) < 0.45
    assert {"0", "1", "2"} <= set(answers)


def test_held_out_questions_never_appear_in_training():
    train = {item["messages"][0]["content"] for item in tasks.generate(5000, seed=[0, 0])}
    held_out = {item["messages"][0]["content"] for item in tasks.generate(1000, seed=[0, 1], held_out=True)}
    assert len(held_out) > 300  # many distinct questions, not a handful repeated
    assert not train & held_out
    assert all(tasks.is_held_out(q) for q in held_out) and not any(tasks.is_held_out(q) for q in train)


def test_task_subset_and_bad_names():
    assert tasks.parse_tasks(None) == tasks.parse_tasks("all") == tasks.TASK_NAMES
    assert tasks.parse_tasks("add, spell,add") == ("add", "spell")
    assert {i["task"] for i in tasks.generate(100, seed=0, tasks=("add",))} == {"add"}
    for spec in ("multiply", "add,nope", ","):
        with pytest.raises(ValueError, match="choose from"):
            tasks.parse_tasks(spec)


class _KnowsOnlyAddition:
    """An engine stand-in that answers sums right and everything else wrong."""

    def reply(self, messages, **kwargs):
        question = messages[-1]["content"]
        return f" {_recompute(question)}\n" if question.startswith("What is") else "no idea"


def test_accuracy_counts_exact_answers_per_task():
    items = tasks.generate(400, seed=5, held_out=True)
    overall, per_task = tasks.accuracy(_KnowsOnlyAddition(), items)
    share_add = sum(i["task"] == "add" for i in items) / len(items)
    assert overall == pytest.approx(share_add)
    assert per_task == {"add": 1.0, "spell": 0.0, "count": 0.0, "reverse": 0.0}

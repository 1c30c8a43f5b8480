"""Synthetic chat tasks, generated in code from a seed, with exactly-checkable answers.

In the spirit of nanochat's spelling tasks, small enough for a CPU model to learn in minutes:
  spell    "Spell the word "apple" letter by letter."              -> "a-p-p-l-e"
  count    "How many times does the letter "p" appear in "apple"?" -> "2"
  reverse  "Reverse the word "cat"."                              -> "tac"
  add      "What is 12 + 7?"                                      -> "19"
Every item is a conversation {"task", "messages": [user, assistant]}. Items are split into train
and held-out by a hash of the user's question, so the two never share a question whatever the
seeds. `accuracy` asks a model each held-out question (greedy) and counts exact answers.
"""
import re
import zlib
from collections import Counter
from functools import lru_cache

import numpy as np

from nanochat.dataloader import load_text

TASK_NAMES = ("spell", "count", "reverse", "add")
HELD_OUT_FRACTION = 5  # one question in 5 is held out
MAX_ADDEND = 20
N_WORDS = 600


@lru_cache(maxsize=1)
def word_list():
    """The most common lowercase alphabetic words of 3-7 letters in the bundled corpus."""
    counts = Counter(re.findall(r"(?<![\w.])[a-z]{3,7}(?![\w.])", load_text()))
    # sort by count then alphabetically, so the list is the same on every machine
    return tuple(w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:N_WORDS])


def _spell(rng, words):
    word = words[rng.integers(len(words))]
    return f'Spell the word "{word}" letter by letter.', "-".join(word)


def _count(rng, words):
    # a third each: a letter the word lacks, one it has once, one it repeats, so always
    # answering "1" scores about a third, not most of the time
    kind = rng.integers(3)
    if kind == 2:
        words = _with_repeats(words)
    word = words[rng.integers(len(words))]
    if kind == 0:
        pool = sorted(set("abcdefghijklmnopqrstuvwxyz") - set(word))
    else:
        # a word like "noon" has no letter that occurs once: then any of its letters
        pool = sorted(c for c in set(word) if (word.count(c) > 1) == (kind == 2)) or sorted(set(word))
    letter = pool[rng.integers(len(pool))]
    return f'How many times does the letter "{letter}" appear in "{word}"?', str(word.count(letter))


@lru_cache(maxsize=4)
def _with_repeats(words):
    return tuple(w for w in words if len(set(w)) < len(w))


def _reverse(rng, words):
    word = words[rng.integers(len(words))]
    return f'Reverse the word "{word}".', word[::-1]


def _add(rng, words):
    a, b = (int(n) for n in rng.integers(0, MAX_ADDEND, 2))
    return f"What is {a} + {b}?", str(a + b)


GENERATORS = {"spell": _spell, "count": _count, "reverse": _reverse, "add": _add}


def parse_tasks(spec):
    """'spell,add' -> ('spell', 'add'); None or 'all' -> every task."""
    if spec is None or spec == "all":
        return TASK_NAMES
    names = tuple(dict.fromkeys(s.strip() for s in spec.split(",") if s.strip()))
    unknown = [n for n in names if n not in GENERATORS]
    if unknown or not names:
        raise ValueError(f"unknown task(s) {', '.join(unknown) or repr(spec)}; choose from {', '.join(TASK_NAMES)}")
    return names


def is_held_out(question):
    return zlib.crc32(question.encode()) % HELD_OUT_FRACTION == 0


def generate(n, seed, tasks=TASK_NAMES, held_out=False):
    """n items, task types drawn uniformly, all from the train side (or all held out)."""
    rng = np.random.default_rng(seed)
    words = word_list()
    items = []
    while len(items) < n:
        task = tasks[rng.integers(len(tasks))]
        question, answer = GENERATORS[task](rng, words)
        if is_held_out(question) == held_out:
            items.append({"task": task, "messages": [{"role": "user", "content": question},
                                                     {"role": "assistant", "content": answer}]})
    return items


def accuracy(engine, items, max_tokens=32):
    """Fraction of items answered exactly right (greedy), overall and per task."""
    right, total = Counter(), Counter()
    for item in items:
        expected = item["messages"][-1]["content"]
        reply = engine.reply(item["messages"][:-1], max_tokens=max_tokens, temperature=0.0)
        total[item["task"]] += 1
        right[item["task"]] += reply.strip() == expected
    per_task = {task: right[task] / total[task] for task in total}
    return sum(right.values()) / max(sum(total.values()), 1), per_task

"""Solutions to the exercises of 09_sft_chat.ipynb."""
import numpy as np


def sft_targets(ids, mask):
    x, y = ids[:-1], ids[1:].copy()
    y[~mask[1:]] = -1  # the target at position i is token i + 1: it is trained if token i + 1 is the assistant's
    return x, y


SOLUTIONS = {"check_sft_targets": sft_targets}

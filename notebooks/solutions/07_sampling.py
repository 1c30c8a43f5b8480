"""Solutions to the exercises of 07_sampling.ipynb."""
import numpy as np


def top_p(probs, p):
    order = np.argsort(-probs, kind="stable")          # most likely first
    mass_before = np.cumsum(probs[order]) - probs[order]
    keep = order[mass_before < p]                      # a token stays while the mass above it is short of p
    out = np.zeros_like(probs)
    out[keep] = probs[keep]
    return out / out.sum()


SOLUTIONS = {"check_top_p": top_p}

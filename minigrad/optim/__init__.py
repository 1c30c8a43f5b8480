"""Optimizers that update minigrad parameters' ``.data`` arrays in place."""
from .adamw import AdamW
from .muon import Muon
from .optimizer import Optimizer
from .sgd import SGD

__all__ = ["Optimizer", "SGD", "AdamW", "Muon"]

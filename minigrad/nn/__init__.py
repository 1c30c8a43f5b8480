"""Neural-network building blocks: Module, layers, functional ops, gradient utilities."""
from minigrad.nn.module import Module, ModuleDict, ModuleList, Parameter
from minigrad.nn.layers import Dropout, Embedding, Linear, RMSNorm
from minigrad.nn import functional, utils

__all__ = ["Module", "ModuleDict", "ModuleList", "Parameter", "Dropout", "Embedding", "Linear", "RMSNorm",
           "functional", "utils"]

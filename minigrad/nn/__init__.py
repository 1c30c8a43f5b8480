"""Neural-network building blocks: Module, layers, functional ops, gradient utilities."""
from minigrad.nn.module import Buffer, Module, ModuleDict, ModuleList, Parameter
from minigrad.nn.layers import Dropout, Embedding, Linear, RMSNorm, init_skipped, skip_init
from minigrad.nn.layers import BatchNorm1d, BatchNorm2d, Conv2d, GroupNorm, LayerNorm
from minigrad.nn import functional, utils

__all__ = ["Module", "ModuleDict", "ModuleList", "Parameter", "Dropout", "Embedding", "Linear", "RMSNorm",
           "Buffer", "BatchNorm1d", "BatchNorm2d", "Conv2d", "GroupNorm", "LayerNorm", "init_skipped", "skip_init",
           "functional", "utils"]

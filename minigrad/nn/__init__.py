"""Neural-network building blocks: Module, layers, functional ops, gradient utilities."""
from minigrad.nn.module import Module, ModuleDict, ModuleList, Parameter
from minigrad.nn.layers import Dropout, Embedding, Linear, RMSNorm, init_skipped, skip_init
from minigrad.nn import functional, utils

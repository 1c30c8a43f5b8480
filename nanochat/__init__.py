"""nanochat: Karpathy's nanochat GPT on minigrad, with its tokenizer, training, checkpoints and chat."""
from nanochat.gpt import GPT, GPTConfig
from nanochat.engine import Engine, KVCache, generate, sample_next_token
from nanochat.tokenizer import Tokenizer

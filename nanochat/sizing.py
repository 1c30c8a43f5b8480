"""What a GPT of a given config will cost, known before anything is allocated, so a size that
cannot fit is refused at once with the estimate instead of failing (or swapping) minutes later."""
import os

BYTES_PER_FLOAT = 4  # minigrad trains and runs in float32
# float32 copies of every parameter while training: weights, gradients, and optimizer state
# (AdamW keeps two moments, Muon one momentum buffer; two is the larger)
TRAINING_COPIES = 4


def parameter_count(config):
    """GPT(config).num_parameters(), from the config alone."""
    C, V = config.n_embd, config.vocab_size
    kv = config.n_kv_head * config.head_dim
    attention = C * C + 2 * kv * C + C * C  # c_q, c_k and c_v, c_proj
    mlp = 2 * 4 * C * C  # c_fc, c_proj
    return 2 * V * C + config.n_layer * (attention + mlp)  # wte, lm_head, blocks


def memory_estimate(config, training):
    """Bytes for the parameters (and, when training, their gradients and optimizer state) plus the
    rotary tables, which cover 10 x sequence_len positions. Activations come on top."""
    copies = TRAINING_COPIES if training else 1
    rotary = 2 * 10 * config.sequence_len * (config.head_dim // 2) * BYTES_PER_FLOAT
    return parameter_count(config) * BYTES_PER_FLOAT * copies + rotary


def available_memory():
    """Bytes the system can give this process now (MemAvailable on Linux), or None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_fits_in_memory(config, training):
    """Raise ValueError, with the estimate, when the model cannot fit in the memory available."""
    need, have = memory_estimate(config, training), available_memory()
    if have is not None and need > have:
        c = config
        purpose = ("to train (weights, gradients, optimizer state, rotary tables)" if training
                   else "for its weights and rotary tables")
        raise ValueError(f"a model of {parameter_count(c):,} parameters (n_layer {c.n_layer}, n_embd {c.n_embd}, "
                         f"vocab_size {c.vocab_size}, sequence_len {c.sequence_len}) needs about "
                         f"{_human(need)} {purpose}, more than the {_human(have)} of memory available")


def _human(n):
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:.3g} {unit}"
        n /= 1000

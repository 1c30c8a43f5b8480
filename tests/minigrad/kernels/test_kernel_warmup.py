"""The first-run warm-up (_warmup.py) compiles every kernel signature a training step and a decoding
step use, so that a run beside it finds them compiled; it starts only on a cache that has never seen
a training run. Each check runs in a fresh process with an empty numba cache (about 20 s of compile)."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

CHILD = r'''
import json, sys
import numpy as np
from numba.core import event
from minigrad import kernels
from minigrad.kernels import _warmup

started = kernels.compile_in_background()  # an empty cache: the warm-up starts
started_on_empty = started is not None
if started is not None:
    started.kill()
    started.wait()
_warmup.warm_up()  # in this process: what it compiled stays in memory, where the steps below find it

compiled = []
class Recorder(event.Listener):
    def on_start(self, ev):
        compiled.append(ev.data["dispatcher"].py_func.__qualname__)
    def on_end(self, ev):
        pass

from nanochat.engine import generate
from nanochat.gpt import GPT
from nanochat.train import config_for_depth
event.register("numba:compile", Recorder())
for depth, batch in ((1, 2), (2, 16)):  # serial and parallel drivers
    model = GPT(config_for_depth(depth, vocab_size=2048, sequence_len=128), seed=0)
    optimizers = model.setup_optimizers()
    x = np.random.default_rng(0).integers(0, 2048, (batch, 129))
    model(x[:, :-1], targets=x[:, 1:]).backward()
    for opt in optimizers:
        opt.step()
    list(generate(model, [1, 2, 3], max_tokens=4, temperature=0.0))
print(json.dumps({"started_on_empty": started_on_empty, "started_after": kernels.compile_in_background() is not None,
                  "compiled": compiled}))
'''


def test_after_the_warm_up_a_training_and_decoding_step_compile_nothing(tmp_path):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "numba"), PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["started_on_empty"] and not result["started_after"]
    assert result["compiled"] == []

"""torch's CPU vector math is warmed before anything counts (sandbox._cpumath): after warm(),
the first real call of each vectorized unary function in a fresh process gives the same bits
as a second call. Without it, a first call was sometimes a little off (exp by up to 1.5e-4 in
about one fresh process of four on a 2-core box), which made the sandbox's perturbed inputs
differ from the verifier's and could move a CPU reference."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from kbench.problems import load
from sandbox import Status, verify
from tests.fakes.relu import RELU

REPO = Path(__file__).resolve().parents[1]

_SCRIPT = '''
import json, torch
from sandbox._cpumath import warm
warm()
g = torch.Generator(); g.manual_seed(7)
z = torch.rand(4000, generator=g) * 0.9 + 0.05
bad = []
for n in ("exp", "log", "tanh", "erf", "sin", "sigmoid"):
    f = getattr(torch, n)
    if not torch.equal(f(z), f(z)):
        bad.append(n)
print(json.dumps(bad))
'''


def test_after_warm_a_first_call_gives_a_second_calls_bits():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO),
                                                                      os.environ.get("PYTHONPATH")]))}
    seen = []
    for _ in range(6):  # fresh processes: the fault was in a process's first call
        r = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True,
                           env=env, timeout=120)
        assert r.returncode == 0, r.stderr[-2000:]
        seen.append(json.loads(r.stdout.strip().splitlines()[-1]))
    assert seen == [[]] * 6, seen


def test_a_cpu_verification_warms_the_verifiers_process():
    from sandbox import _cpumath

    v = verify(load("level1/relu")[0], RELU, device="cpu", timing=False)
    assert v.status is Status.CORRECT, v.reason
    assert _cpumath._DONE

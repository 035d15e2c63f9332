"""PYBONSAI_OP_PROFILE=1 (vendor/patches/0005 + csrc/kernels/cpu/q1_0_op_profile.c): ggml-cpu's
graph loop sums, per op and thread, the time each node computes and the time its thread then
waits; benchmarks/op_profile.py builds on these lines."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from pybonsai import system_info

CHILD = textwrap.dedent("""
    import sys, time
    from pybonsai import Llama
    llm = Llama(sys.argv[1], n_ctx=128, n_threads=2, n_threads_batch=2, verbose=False)
    start = time.perf_counter()
    llm.eval(llm.tokenize(b"Hello there"))
    for _ in range(int(sys.argv[2])):
        llm.eval([1])
    print(time.perf_counter() - start)
""")


def _run(model, decode_calls, **env):
    proc = subprocess.run([sys.executable, "-c", CHILD, str(model), str(decode_calls)], capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, **env))
    assert proc.returncode == 0, proc.stderr
    sums = {}
    for line in proc.stderr.splitlines():
        if line.startswith("pybonsai-op-profile "):
            name, _, rest = line[len("pybonsai-op-profile "):].rpartition(" thread ")
            f = rest.split()
            sums[(name, int(f[0]))] = dict(count=int(f[2]), compute_ns=int(f[4]), wait_ns=int(f[6]))
    return float(proc.stdout.split()[-1]), sums


def test_off_by_default(tiny_model_path):
    _, sums = _run(tiny_model_path, 2)
    assert sums == {}
    _, sums = _run(tiny_model_path, 2, PYBONSAI_OP_PROFILE="0")
    assert sums == {}


@pytest.mark.skipif(system_info().get("q1_0_kernel") in (None, "upstream"),
                    reason="no pybonsai Q1_0 CPU kernel on this CPU: MUL_MAT(Q1_0) is upstream's there")
def test_counts_every_node_of_every_graph_per_thread(tiny_model_path):
    decode_calls = 5
    wall_s, sums = _run(tiny_model_path, decode_calls, PYBONSAI_OP_PROFILE="1")
    graphs = 1 + decode_calls
    # the tiny model: 2 layers x 7 matrices, plus the LM head (token_embd is tied, a GET_ROWS)
    q1 = [sums[("MUL_MAT(Q1_0)", t)] for t in (0, 1)]
    quant = [sums[("MUL_MAT(Q1_0): activation quantization", t)] for t in (0, 1)]
    for t in (0, 1):
        assert q1[t]["count"] == graphs * (2 * 7 + 1)
        assert quant[t]["count"] == q1[t]["count"]
        assert 0 < quant[t]["compute_ns"] < q1[t]["compute_ns"]  # quantizing is a part of the op
        # the embedding row, and the last layer's selection of the rows that need logits (x2)
        assert sums[("GET_ROWS", t)]["count"] == 3 * graphs
        assert sums[("FLASH_ATTN_EXT", t)]["count"] == 2 * graphs  # Llama's default: flash attention
        # thread t's time inside graphs cannot exceed the wall time around them
        inside = sum(v["compute_ns"] + v["wait_ns"] for (name, th), v in sums.items()
                     if th == t and not name.endswith("activation quantization"))
        assert 0 < inside < wall_s * 1e9

"""Each exported op inside ``torch.compile(fullgraph=True)``, traced but not run (copied into
the package as ``tests/_trace.py``; ``tests/test_ops.py`` runs it in a child process).

Per op, a small model calling it is compiled with Dynamo (``fullgraph=True``: any graph
break raises) and AOTAutograd, whose forward graph is what Inductor would compile. The
backend records that graph and stops before anything runs, so this works without a GPU, on
CPU tensors, with real (not interpreted) Triton kernels: a ``triton_op`` shows its kernels as
``triton_kernel_wrapper_functional`` nodes (Inductor traces into them), a ``custom_op`` stays
one opaque node. Each op is compiled twice, with static and with dynamic sizes. Prints one
JSON object: op name -> {"registration", "graphs", "kernels", "opaque", "error"}, and the
same four keys suffixed ``_dynamic``.

Usage: ``python -m <pkg>.tests._trace`` (without ``TRITON_INTERPRET=1``: under the
interpreter ``@triton.jit`` gives interpreted functions, which ``wrap_triton`` leaves as they
are and which cannot take a trace's fake tensors).
"""

from __future__ import annotations

import importlib
import json
import sys
from typing import Any

import torch

PKG = (__spec__.name if __spec__ else __name__).split(".")[0]


class _Stop(Exception):
    """Raised by the recording backend: the graph is captured, nothing is to run."""


def _kernel_name(node: torch.fx.Node) -> str:
    from torch._higher_order_ops.triton_kernel_wrap import kernel_side_table

    k = kernel_side_table.get_kernel(node.kwargs["kernel_idx"])
    fn = getattr(k, "fn", k)
    while hasattr(fn, "fn"):  # Autotuner / Heuristics wrap a JITFunction
        fn = fn.fn
    return getattr(fn, "__name__", repr(fn))


def trace(spec: Any, device: str) -> dict[str, Any]:
    from torch._dynamo.backends.common import aot_autograd

    rt = importlib.import_module(f"{PKG}._runtime")
    op = getattr(getattr(torch.ops, PKG), spec.name)
    params = next(iter(spec.cpu_shapes.values())) if device == "cpu" else next(
        iter(spec.verified.values()))["params"]
    inputs = rt.inputs_at(spec, params, 0, device)
    with rt.unverified_shapes_allowed():
        state = rt.state(spec, inputs)  # empty unless a triton op takes its model's tensors

    class UsesOp(torch.nn.Module):
        def forward(self, *xs: Any) -> Any:
            return op(*xs, state) if spec.takes_state else op(*xs)

    wrapper = torch.ops.higher_order.triton_kernel_wrapper_functional
    out: dict[str, Any] = {"registration": spec.registration}
    # dynamic=True: sizes arrive symbolic; the op specializes them (one graph per shape, each
    # with its verified model and knobs) instead of missing every verified shape.
    for suffix, dynamic in (("", False), ("_dynamic", True)):
        graphs: list[torch.fx.GraphModule] = []

        def record(gm: torch.fx.GraphModule, example_inputs: Any) -> Any:
            graphs.append(gm)  # noqa: B023
            raise _Stop

        torch._dynamo.reset()
        compiled = torch.compile(UsesOp(), fullgraph=True, dynamic=dynamic,
                                 backend=aot_autograd(fw_compiler=record))
        error = None
        try:
            with rt.unverified_shapes_allowed(), torch.no_grad():
                compiled(*inputs)
        except Exception as e:  # noqa: BLE001 - reported, and the test names it
            cause: BaseException | None = e
            while cause is not None and not isinstance(cause, _Stop):
                cause = cause.__cause__ or cause.__context__
            if cause is None:
                error = f"{type(e).__name__}: {str(e)[:2000]}"
        nodes = [n for g in graphs for n in g.graph.nodes if n.op == "call_function"]
        out.update({
            f"graphs{suffix}": len(graphs),
            f"kernels{suffix}": [_kernel_name(n) for n in nodes if n.target is wrapper],
            f"opaque{suffix}": any(str(n.target).startswith(f"{PKG}.") for n in nodes),
            f"error{suffix}": error,
        })
    return out


def main() -> int:
    pkg = importlib.import_module(PKG)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    out = {spec.name: trace(spec, device) for spec in pkg.SPECS.values()}
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Rule ids, violations and results of the static policy."""

from __future__ import annotations

from dataclasses import dataclass

RULES: dict[str, str] = {
    "forbidden-import": "imports (or reaches) a module other than torch, triton and harmless "
                        "standard modules, or loads a module by name",
    "forbidden-name": "uses a builtin or API that evaluates code, reads files or reaches the "
                      "interpreter (eval, exec, open, computed getattr, torch.load, storages ...)",
    "dunder-access": "touches a dunder attribute other than names, versions and protocol "
                     "methods, or defines a hook dunder (__getattr__, __del__ ...)",
    "introspection": "reaches frames, code objects, private attributes, module objects, log "
                     "records or format-string attribute lookups",
    "try-except": "catches every exception around code that handles tensors: a silent fallback",
    "concurrency": "side streams, CUDA graphs, events, threads, processes or async code",
    "monkeypatch": "assigns to or deletes attributes of modules, kernels or objects passed in",
    "internals": "uses torch/triton internals, compilers, global torch state or harness tools",
    "tensor-subclass": "subclasses torch.Tensor or defines __torch_function__/__torch_dispatch__",
    "reference-call": "hands a PyTorch op around as a value, or computes on the host outside "
                      "the op trace (PyTorch compute in forward is refused at run time)",
    "caching": "keeps a tensor across calls (in self, a global, a default or a cache): a "
               "result cache",
    "no-kernel": "defines no @triton.jit kernel and no load_inline extension",
    "cuda-vendor": "CUDA source calls a vendor library or ATen compute",
    "cuda-unsafe": "CUDA source reaches the OS, threads, side streams, Python or the linker",
    "cuda-dynamic": "load_inline arguments are not string constants the policy can read",
    "too-complex": "the source nests too deeply to be analysed",
    "policy-error": "the checker itself failed (a bug in kbench): the source is rejected unchecked",
}


@dataclass(frozen=True)
class Violation:
    """One broken rule: ``rule`` is a :data:`RULES` id; ``message`` says where and what to do."""

    rule: str
    message: str
    line: int | None


@dataclass(frozen=True)
class PolicyResult:
    """The policy's answer for one source: its backend and every violation found."""

    backend: str  # "triton" | "cuda" | "unknown"
    violations: tuple[Violation, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.violations

    @property
    def rules(self) -> frozenset[str]:
        return frozenset(v.rule for v in self.violations)

    def reason(self) -> str:
        """Every violation, one per line (empty when the source passes)."""
        return "\n".join(f"[{v.rule}] {v.message}" for v in self.violations)



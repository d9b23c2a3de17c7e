"""The contract every sandbox Backend passes: a subclass of :class:`BackendContract` supplies
one fixture, ``backend``; here it is every backend available on this machine.

Each test runs a real verification through the backend on CPU (Triton interpreter)."""

from __future__ import annotations

import functools
import importlib.util
import os
import sys
import textwrap
from pathlib import Path

import pytest

from kbench.problems import load
from sandbox import Limits, Status, verify
from sandbox.backends import Backend, available_backends, get_backend
from tests.fakes.relu import RELU

_LEAK_CHECK = '''
import os

_LEAKED = sorted(k for k, v in os.environ.items() if "sk-ant-secret" in v)
if _LEAKED:
    raise RuntimeError(f"the child can read secrets: {_LEAKED}")
'''

_FAST = Limits(import_s=120, check_s=60, trials=1, derived_trials=1, max_derived=1)


@pytest.fixture(scope="module")
def relu():
    return load("level1/relu")[0]


class BackendContract:
    """Inherit and supply a ``backend`` fixture returning a :class:`Backend` instance."""

    def run(self, backend: Backend, spec, source: str, limits: Limits = _FAST, **kw):
        return verify(spec, textwrap.dedent(source), device="cpu", limits=limits,
                      isolation=backend, **kw)

    def test_is_a_registered_backend(self, backend: Backend) -> None:
        assert isinstance(backend, Backend)
        assert type(get_backend(backend.name)) is type(backend)

    def test_honest_candidate_is_correct(self, backend: Backend, relu) -> None:
        v = self.run(backend, relu, RELU)
        assert v.status is Status.CORRECT, v.reason
        assert v.backend == "triton"

    def test_prepare_is_optional_and_idempotent(self, backend: Backend, relu) -> None:
        backend.prepare("cpu")
        backend.prepare("cpu")
        v = self.run(backend, relu, RELU)
        assert v.status is Status.CORRECT, v.reason

    def test_crashing_candidate_is_runtime_error(self, backend: Backend, relu) -> None:
        src = RELU.replace("        x = x.contiguous()\n",
                              "        raise ValueError('boom from the candidate')\n")
        v = self.run(backend, relu, src)
        assert v.status is Status.RUNTIME_ERROR, v.reason
        assert "boom from the candidate" in v.reason

    def test_infinite_loop_times_out_and_is_killed(self, backend: Backend, relu) -> None:
        src = RELU.replace("        x = x.contiguous()\n",
                              "        while True:\n            pass\n")
        v = self.run(backend, relu, src, limits=Limits(import_s=120, check_s=3, trials=1,
                                                       derived_trials=1, max_derived=1))
        assert v.status is Status.TIMEOUT, v.reason
        assert "killed" in v.reason

    def test_environment_has_no_secrets(self, backend: Backend, tmp_path: Path,
                                        monkeypatch) -> None:
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test-secret")
        monkeypatch.setenv("HF_TOKEN", "hf_secret")
        env = backend.env(tmp_path, "cpu")
        assert "OPENAI_API_KEY" not in env and "HF_TOKEN" not in env
        assert not any("sk-test-secret" in v or "hf_secret" in v for v in env.values())

    def test_child_sees_no_secrets(self, backend: Backend, relu, monkeypatch) -> None:
        """The child itself, not only the declared environment: a candidate that fails when
        it can read a secret (static policy off, so it may read os.environ)."""
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-secret")
        src = RELU.replace("BLOCK = 256\n", "BLOCK = 256\n" + _LEAK_CHECK)
        v = self.run(backend, relu, src, static_policy=False)
        assert v.status is Status.CORRECT, v.reason


def test_every_backend_that_can_run_here_is_covered() -> None:
    """The fixture below covers what is available: make sure that is not less than it should
    be (the fork server wherever Linux and os.fork are, subprocess everywhere, docker
    wherever its SDK is installed; the fixture skips it, saying why, when no engine answers)."""
    assert "subprocess" in available_backends()
    if importlib.util.find_spec("docker") is not None:
        assert "docker" in available_backends()
    if sys.platform.startswith("linux") and hasattr(os, "fork"):
        assert "forkserver" in available_backends()


@functools.lru_cache(maxsize=1)
def docker_unusable() -> str | None:
    """Why the docker backend cannot run here (None when it can): no engine answered, or
    its image is missing (``python -m sandbox.backends._docker_image`` builds it)."""
    from sandbox.backends._docker import default_image, engine_status

    up, detail, present = engine_status()
    if not up:
        return detail
    if not present:
        return (f"docker engine answers, but image {default_image()!r} is missing: build it "
                "with `python -m sandbox.backends._docker_image` or set KBENCH_DOCKER_IMAGE")
    return None


@pytest.fixture(params=available_backends())
def backend(request) -> Backend:
    if request.param == "docker" and docker_unusable():
        pytest.skip(docker_unusable())
    return get_backend(request.param)


class TestAvailableBackends(BackendContract):
    pass

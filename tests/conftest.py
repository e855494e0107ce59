"""Shared test settings for the fastsoftmax suite.

* Hypothesis profiles: "ci" (derandomized, reproducible) when the CI environment variable is set, else "dev".
* ``simd_level``: runs a test module once per SIMD level this machine supports (ids ``simd=baseline``,
  ``simd=avx2``, ...), switching the kernel module in-process and restoring the original level afterwards.
  The numeric modules opt in with ``pytestmark = pytest.mark.usefixtures("simd_level")``.
* ``restore_thread_settings`` (autouse): every test leaves the process-wide thread settings as it found them.
* ``threads_from_two_elements``: arrays of any size run on the threads a call asks for (the thread rule's
  minimum size lowered), so that "at two threads" in a test of small arrays means two threads.
"""
import os

import pytest
from hypothesis import settings

from fastsoftmax import _api, _dispatch, _threads

settings.register_profile("ci", derandomize=True, max_examples=50, deadline=None, print_blob=True)
settings.register_profile("dev", max_examples=50, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


AVAILABLE_LEVELS = _dispatch.available_levels()


@pytest.fixture(scope="module", params=AVAILABLE_LEVELS, ids=lambda level: f"simd={level}")
def simd_level(request):
    """Run the requesting module's tests with the kernels compiled for one SIMD level.

    Module-scoped so that pytest runs all tests of a module at one level before switching (and so that
    Hypothesis tests may use it: Hypothesis rejects function-scoped fixtures)."""
    original = _dispatch.level
    _api._use_level(request.param)
    assert _dispatch.level == request.param
    assert _api._k.__name__ == f"fastsoftmax._kernels_{request.param}"
    yield request.param
    _api._use_level(original)


@pytest.fixture(autouse=True)
def restore_thread_settings():
    """Save and restore set_num_threads' default.

    There is no "unset" in the public API, so the private default is put back as it was (normally None, meaning
    "OpenMP's default")."""
    saved_default = _threads._default
    yield
    _threads._set_default(saved_default)


@pytest.fixture
def threads_from_two_elements():
    """Lower PARALLEL_MIN_ELEMENTS (arrays below it run on one thread) to 2 for one test, then restore it. The
    kernels' own minimum for softmax_backward (24 576 elements, a compile-time constant) still applies."""
    saved = _threads.PARALLEL_MIN_ELEMENTS
    _threads.PARALLEL_MIN_ELEMENTS = 2
    _threads.configure(_api._k)
    yield
    _threads.PARALLEL_MIN_ELEMENTS = saved
    _threads.configure(_api._k)

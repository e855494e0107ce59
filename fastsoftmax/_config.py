"""What this install is and what it runs on: the data behind show_config() and `fastsoftmax info`."""
import os
import platform
import sys

import numpy as np

from . import _buffers, _dispatch, _threads
from ._version import __version__


def get_config():
    """A dict of build and runtime facts (stable keys; used by show_config and the benchmark JSON)."""
    info = _dispatch.kernels.build_info()
    return {
        "version": __version__,
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "compiler": info["compiler"],
        "openmp": info["openmp"],
        "openmp_version": info["openmp_version"],
        "threads": _threads.get_num_threads(),
        "parallel_min_elements": _threads.PARALLEL_MIN_ELEMENTS,
        "simd_level": _dispatch.level,
        "simd_available": _dispatch.available_levels(),
        "simd_built": _dispatch.built_levels(),
        "simd_env": os.environ.get(_dispatch.ENV_VAR),
        "result_cache_min_bytes": _buffers.min_bytes,
        "result_cache_on": _buffers.caching(),
    }


def show_config():
    """Print the version, compiler, OpenMP status and thread count, and the SIMD level in use.

    Examples
    --------
    >>> import fastsoftmax
    >>> fastsoftmax.show_config()  # doctest: +SKIP
    fastsoftmax 0.1.0
      python:     3.11.7, numpy 2.4.6, Linux-6.18.44-x86_64-with-glibc2.36
      compiler:   gcc 12.2.0
      OpenMP:     yes (201511), 2 threads by default; parallel from 8192 elements
      SIMD:       avx2 (available: baseline, avx2; built: baseline, avx2, avx512)
      results:    from 32 MiB, the memory of freed results is reused (kept now: 0 MiB)
    """
    c = get_config()
    omp = (f"yes ({c['openmp_version']}), {c['threads']} threads by default; parallel from "
           f"{c['parallel_min_elements']} elements" if c["openmp"] else "no (built without OpenMP: serial kernels)")
    forced = f"; forced by {_dispatch.ENV_VAR}={c['simd_env']}" if c["simd_env"] else ""
    print(f"fastsoftmax {c['version']}")
    print(f"  python:     {c['python']}, numpy {c['numpy']}, {c['platform']}")
    print(f"  compiler:   {c['compiler']}")
    print(f"  OpenMP:     {omp}")
    print(f"  SIMD:       {c['simd_level']} (available: {', '.join(c['simd_available'])}; "
          f"built: {', '.join(c['simd_built'])}{forced})")
    if c["result_cache_on"]:
        print(f"  results:    from {c['result_cache_min_bytes'] / 2**20:g} MiB, the memory of freed results is "
              f"reused (kept now: {_buffers.stats()['bytes'] / 2**20:g} MiB)")
    else:
        print("  results:    memory of freed results not reused (another NumPy allocation policy is in effect)")

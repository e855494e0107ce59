"""The contenders of `fastsoftmax bench` and of benchmarks/: fastsoftmax, its peers, and the copy floor.

Each contender is a zero-argument callable built once per (case, op, thread count) outside the timed region, so a
timed call is exactly one library call: no conversion, no allocation beyond what the library itself does.

* numpy: the ``np.exp`` recipe (single-threaded whatever the thread count);
* scipy: ``scipy.special.softmax`` / ``log_softmax`` (forward only);
* torch: ``torch.softmax`` / ``log_softmax`` and ``torch._softmax_backward_data`` /
  ``torch._log_softmax_backward_data`` on ``torch.from_numpy`` views (no copies);
* onnxruntime: a one-node Softmax / LogSoftmax model (opset 13) run through an IOBinding, one session per
  (op, dtype, rank, axis, threads), reused (forward only);
* openvino: a one-node SoftMax / LogSoftmax model (opset 13) compiled for the CPU with a static shape, one per
  (op, shape, axis, threads), run through an infer request whose input tensor shares the array's memory
  (forward float32 only: its CPU plugin computes float64 models in float32);
* copy: the memory floor, a plain copy of the input into a preallocated array.

Thread counts are pinned for everyone by `pinned_threads`.
"""
import contextlib
import importlib
import importlib.metadata
from concurrent.futures import ThreadPoolExecutor

import numpy as np

import fastsoftmax
from fastsoftmax._config import get_config

OPS = ("softmax", "log_softmax", "softmax_backward", "log_softmax_backward")
BACKWARD_OPS = ("softmax_backward", "log_softmax_backward")
PEERS = ("numpy", "scipy", "torch", "onnxruntime", "openvino")
FASTSOFTMAX = "fastsoftmax"
FASTSOFTMAX_OUT = "fastsoftmax(out=)"
COPY = "copy"

# Below this many elements a copy (like a fastsoftmax call) is done on one thread whatever the thread count.
PARALLEL_MIN_ELEMENTS = get_config()["parallel_min_elements"]


class PeerUnavailable(Exception):
    """A peer that was asked for cannot be imported."""


# ---------------------------------------------------------------------------------------------------------
# Discovery
# ---------------------------------------------------------------------------------------------------------

# Python modules each peer needs (onnxruntime needs onnx to build its one-node model).
_MODULES = {"numpy": ("numpy",), "scipy": ("scipy.special",), "torch": ("torch",),
            "onnxruntime": ("onnxruntime", "onnx"), "openvino": ("openvino",)}
_DISTRIBUTIONS = {"numpy": "numpy", "scipy": "scipy", "torch": "torch", "onnxruntime": "onnxruntime",
                  "openvino": "openvino", "onnx": "onnx", "threadpoolctl": "threadpoolctl", "matplotlib": "matplotlib"}


def installed_versions():
    """{distribution: version or None} from package metadata, without importing anything (torch is slow)."""
    out = {}
    for name, dist in _DISTRIBUTIONS.items():
        try:
            out[name] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def load_peers(names, required):
    """Import the peers `names`; returns {name: version}. A peer in `required` that fails raises
    PeerUnavailable naming it; the others are silently left out."""
    loaded = {}
    for name in names:
        try:
            mods = [importlib.import_module(m) for m in _MODULES[name]]
        except Exception as exc:  # ImportError, or a broken install raising something else
            if name in required:
                raise PeerUnavailable(f"peer {name!r} was asked for but cannot be imported: {exc}") from exc
            continue
        # the distribution's version: openvino's __version__ is a build string ("2026.4.1-22982-e213a14-...")
        loaded[name] = installed_versions().get(name) or getattr(mods[0], "__version__", None)
    return loaded


def _torch():
    import torch
    return torch


def have_torch():
    try:
        _torch()
    except Exception:
        return False
    return True


def threadpoolctl_version():
    try:
        import threadpoolctl
    except ImportError:
        return None
    return threadpoolctl.__version__


# ---------------------------------------------------------------------------------------------------------
# Thread pinning
# ---------------------------------------------------------------------------------------------------------

@contextlib.contextmanager
def pinned_threads(n_threads, use_torch):
    """Everyone on `n_threads` threads: threadpoolctl (BLAS and OpenMP pools, if installed), torch's intra-op
    pool, and fastsoftmax's default (see `fastsoftmax_callable` for why not its num_threads argument).
    ONNX Runtime and OpenVINO get it through their session and compile options. Restores the previous settings on
    exit."""
    with contextlib.ExitStack() as stack:
        # fastsoftmax first: its previous default must be read before threadpoolctl caps OpenMP.
        fs_before = fastsoftmax.get_num_threads()
        fastsoftmax.set_num_threads(n_threads)
        stack.callback(fastsoftmax.set_num_threads, fs_before)
        if use_torch:
            torch = _torch()
            before = torch.get_num_threads()
            torch.set_num_threads(n_threads)
            stack.callback(torch.set_num_threads, before)
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            pass
        else:
            stack.enter_context(threadpool_limits(limits=n_threads))
        yield


# ---------------------------------------------------------------------------------------------------------
# fastsoftmax
# ---------------------------------------------------------------------------------------------------------

def fastsoftmax_callable(op, arrays, axis, out=None):
    """fastsoftmax on `arrays` ((x,) forward, (grad_output, output) backward), optionally into `out`.

    The thread count comes from `fastsoftmax.set_num_threads` (set by `pinned_threads`), not from a
    ``num_threads=`` argument: the argument (like ``out=``) turns off the per-call fast path for small arrays,
    which plain calls take, so it would time a path users do not hit. On large arrays both are the same."""
    fn = getattr(fastsoftmax, op)
    if out is None:
        return lambda: fn(*arrays, axis)
    return lambda: fn(*arrays, axis, out=out)


# ---------------------------------------------------------------------------------------------------------
# Peers
# ---------------------------------------------------------------------------------------------------------

def _numpy_callable(op, arrays, axis):
    if op == "softmax":
        (x,) = arrays

        def run():
            e = np.exp(x - x.max(axis, keepdims=True))
            e /= e.sum(axis, keepdims=True)
            return e
    elif op == "log_softmax":
        (x,) = arrays

        def run():
            s = x - x.max(axis, keepdims=True)
            s -= np.log(np.exp(s).sum(axis, keepdims=True))
            return s
    elif op == "softmax_backward":
        g, y = arrays

        def run():
            return y * (g - (g * y).sum(axis, keepdims=True))
    else:
        g, y = arrays

        def run():
            return g - np.exp(y) * g.sum(axis, keepdims=True)
    return run


def _scipy_callable(op, arrays, axis):
    if op in BACKWARD_OPS:
        return None  # scipy has no backward
    import scipy.special
    fn = getattr(scipy.special, op)
    (x,) = arrays
    return lambda: fn(x, axis=axis)


def _torch_callable(op, arrays, axis):
    torch = _torch()
    tensors = [torch.from_numpy(a) for a in arrays]  # views: no copies
    if op == "softmax":
        (t,) = tensors
        return lambda: torch.softmax(t, axis)
    if op == "log_softmax":
        (t,) = tensors
        return lambda: torch.log_softmax(t, axis)
    g, y = tensors
    back = torch._softmax_backward_data if op == "softmax_backward" else torch._log_softmax_backward_data
    return lambda: back(g, y, axis, y.dtype)


_ort_sessions = {}


def _ort_session(op, dtype, ndim, axis, n_threads):
    """One session per (op, dtype, rank, axis, threads), built once and reused."""
    key = (op, np.dtype(dtype).str, ndim, axis, n_threads)
    sess = _ort_sessions.get(key)
    if sess is None:
        import onnxruntime as ort
        from onnx import TensorProto, helper
        elem = {"f4": TensorProto.FLOAT, "f8": TensorProto.DOUBLE}[np.dtype(dtype).str[1:]]
        dims = [f"d{i}" for i in range(ndim)]
        graph = helper.make_graph(
            [helper.make_node("Softmax" if op == "softmax" else "LogSoftmax", ["x"], ["y"], axis=axis)],
            "fastsoftmax_bench",
            [helper.make_tensor_value_info("x", elem, dims)],
            [helper.make_tensor_value_info("y", elem, dims)])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        options = ort.SessionOptions()
        options.intra_op_num_threads = n_threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # Idle pool threads sleep instead of spinning: with contenders interleaved on few cores, a spinning ORT
        # worker would steal a core from whoever runs next (it costs ORT itself nothing measurable here).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        sess = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        _ort_sessions[key] = sess
    return sess


def _onnxruntime_callable(op, arrays, axis, n_threads):
    if op in BACKWARD_OPS:
        return None  # no backward op in ONNX Runtime's inference sessions
    (x,) = arrays
    sess = _ort_session(op, x.dtype, x.ndim, axis if axis >= 0 else axis + x.ndim, n_threads)
    # IOBinding: the input is bound once (no per-call dict and conversion), the output is allocated by ORT on
    # each run like every other peer's result. Measured about 2x cheaper per call than sess.run on 1x1000.
    binding = sess.io_binding()
    binding.bind_cpu_input("x", x)
    binding.bind_output("y", "cpu")

    def run():
        sess.run_with_iobinding(binding)
        return binding
    return run


_ov = {}  # the openvino Core and the compiled models, built once and reused


def _openvino_callable(op, arrays, axis, n_threads):
    if op in BACKWARD_OPS:
        return None  # no backward op in an inference runtime
    (x,) = arrays
    if x.dtype != np.float32:
        return None  # the CPU plugin runs float64 models in float32 (measured: 2.6e-6 relative error)
    import openvino as ov
    import openvino.opset13 as ops
    axis = axis if axis >= 0 else axis + x.ndim
    key = (op, x.shape, axis, n_threads)
    compiled = _ov.get(key)
    if compiled is None:
        core = _ov.get("core")
        if core is None:
            core = _ov["core"] = ov.Core()
        param = ops.parameter(list(x.shape), ov.Type.f32, name="x")
        node = ops.softmax(param, axis) if op == "softmax" else ops.log_softmax(param, axis)
        config = {
            "INFERENCE_NUM_THREADS": n_threads, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY",
            # f32 arithmetic, as everyone else's (CPUs with bf16 would otherwise get bf16 by default)
            "INFERENCE_PRECISION_HINT": "f32",
            # no pinning: with one thread OpenVINO runs on the calling thread, and pinning it to a core would
            # also pin every contender timed after it
            "ENABLE_CPU_PINNING": False,
        }
        compiled = _ov[key] = core.compile_model(ov.Model([node], [param], "fastsoftmax_bench"), "CPU", config)
    request = compiled.create_infer_request()
    request.set_input_tensor(ov.Tensor(x, shared_memory=True))  # bound once, no copy per call

    def run():
        # share_outputs: the result stays in the request's own output tensor, reused between calls (by default
        # infer() copies it into a new array each call, which the other peers are not charged for)
        request.infer(share_outputs=True)
        return request
    return run


def peer_callable(name, op, arrays, axis, n_threads):
    """A zero-argument callable running peer `name`, or None if the peer has no such op."""
    if name == "numpy":
        return _numpy_callable(op, arrays, axis)
    if name == "scipy":
        return _scipy_callable(op, arrays, axis)
    if name == "torch":
        return _torch_callable(op, arrays, axis)
    if name == "onnxruntime":
        return _onnxruntime_callable(op, arrays, axis, n_threads)
    if name == "openvino":
        return _openvino_callable(op, arrays, axis, n_threads)
    raise ValueError(f"unknown peer {name!r}")


def result_array(name, value):
    """The NumPy array a contender's call returned (for checking it against the reference)."""
    if name == "onnxruntime":
        return value.copy_outputs_to_cpu()[0]
    if name == "openvino":
        return value.get_output_tensor().data.copy()
    if name == "torch":
        return value.numpy()
    return np.asarray(value)


# ---------------------------------------------------------------------------------------------------------
# Copy floor
# ---------------------------------------------------------------------------------------------------------

_pools = {}


def _pool(n_threads):
    pool = _pools.get(n_threads)
    if pool is None:
        pool = _pools[n_threads] = ThreadPoolExecutor(n_threads, thread_name_prefix="fastsoftmax-bench-copy")
    return pool


def copy_floor(x, n_threads, use_torch):
    """(callable, description): copy `x` into a preallocated array of its shape, on `n_threads` threads.

    One thread (or a small array): ``np.copyto``. More: torch's parallel ``copy_`` if torch is installed,
    else ``np.copyto`` on `n_threads` contiguous blocks in a thread pool (copyto releases the GIL)."""
    out = np.empty_like(x)
    if n_threads <= 1 or x.size < PARALLEL_MIN_ELEMENTS:
        return (lambda: np.copyto(out, x)), "np.copyto"
    if use_torch:
        torch = _torch()
        src, dst = torch.from_numpy(x), torch.from_numpy(out)
        return (lambda: dst.copy_(src)), f"torch copy_ ({n_threads} threads)"
    flat_x, flat_out = x.reshape(-1), out.reshape(-1)
    bounds = np.linspace(0, x.size, n_threads + 1).astype(np.intp)
    blocks = [(flat_out[a:b], flat_x[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
    pool = _pool(n_threads)

    def run():
        for f in [pool.submit(np.copyto, dst, src) for dst, src in blocks]:
            f.result()
    return run, f"np.copyto on {n_threads} threads"


def shutdown():
    """Release the copy thread pools, the ONNX Runtime sessions and the OpenVINO models."""
    for pool in _pools.values():
        pool.shutdown()
    _pools.clear()
    _ort_sessions.clear()
    _ov.clear()

"""The public functions. Argument rules live here, in one place; the arithmetic lives in the kernel modules.

Every call is reduced to one of two kernel layouts, seen as (outer, K, inner) with the softmax axis K in the
middle and `inner` contiguous:

* inner == 1: rows (the last axis, or several trailing axes merged);
* inner  > 1: slabs whose columns are the slices (a non-last axis of a C-ordered array), walked with a stride.

Anything else (non-adjacent axes, Fortran order, odd strides) is copied once to a C-ordered buffer.
"""
import operator

import numpy as np
from numpy.exceptions import AxisError
from numpy.lib.array_utils import normalize_axis_index

from . import _buffers, _dispatch, _threads

_k = _dispatch.kernels

_F16 = np.dtype(np.float16)
_F32 = np.dtype(np.float32)
_F64 = np.dtype(np.float64)


def _use_level(level):
    """Switch the kernel module (tests run the suite under every SIMD level the CPU supports)."""
    global _k
    _k = _dispatch.load(level)
    _threads.configure(_k)
    _dispatch.kernels = _k
    _dispatch.level = level


# ---------------------------------------------------------------------------------------------------------
# Argument rules
# ---------------------------------------------------------------------------------------------------------

def _as_array(x, name):
    try:
        return np.asarray(x)
    except Exception as exc:  # ragged lists and the like: say which argument
        raise ValueError(f"{name} could not be converted to an array: {exc}") from exc


def _dtypes(dt, requested, name):
    """(computation dtype, result dtype) for an input of dtype `dt` and the `dtype=` argument."""
    kind = dt.kind
    if kind not in "biuf":
        raise TypeError(f"{name} has dtype {dt}, which fastsoftmax does not support: it computes on real "
                        f"floating point (float16, float32, float64), bool and integer inputs")
    if requested is not None:
        try:
            req = np.dtype(requested)
        except TypeError as exc:
            raise TypeError(f"dtype={requested!r} is not a NumPy dtype") from exc
        if req.kind != "f" or req.newbyteorder("=") not in (_F32, _F64):
            raise TypeError(f"dtype must be float32 or float64, got {req}")
        req = req.newbyteorder("=")  # results are native; '>f8' asks for float64
        return req, req
    if kind == "f":
        if dt.itemsize == 2:
            return _F32, _F16
        if dt.itemsize == 4:
            return _F32, _F32
        if dt.itemsize == 8:
            return _F64, _F64
        raise TypeError(f"{name} has dtype {dt} (extended precision), which fastsoftmax computes only in "
                        f"float64: pass dtype=np.float64 to accept the rounding")
    return _F64, _F64  # bool and integers, as scipy


def _axis_index(a, axis):
    if isinstance(a, (bool, np.bool_)):
        raise TypeError(f"axis must be an int, a tuple of ints or None, got {axis!r}")
    try:
        return operator.index(a)
    except TypeError:
        raise TypeError(f"axis must be an int, a tuple of ints or None, got {axis!r}") from None


def _axes(axis, ndim):
    """Normalise `axis` (int, tuple of ints or None) to a sorted tuple of non-negative axes. A 0-d array is
    treated as one element, so its valid axes are those of shape (1,): -1, 0, (), (0,), (-1,) and None."""
    if type(axis) is int and -ndim <= axis < ndim:  # the common case, without the general machinery (~1.5 us)
        return (axis % ndim,)
    if axis is None:
        return tuple(range(ndim))
    items = axis if isinstance(axis, tuple) else (axis,)
    indices = [_axis_index(a, axis) for a in items]
    if ndim == 0:
        bad = [a for a in indices if a not in (0, -1)]
        if bad:
            raise AxisError(f"axis {bad[0]} is out of bounds for a 0-dimensional array (one element: axis -1, 0 "
                            f"or None)")
    axes = [normalize_axis_index(a, max(ndim, 1)) for a in indices]
    if len(set(axes)) != len(axes):
        raise ValueError(f"repeated axis in axis={axis!r}")
    if ndim == 0:
        return tuple(axes)
    return tuple(sorted(axes)) if isinstance(axis, tuple) else (axes[0],)


def _check_out(out, shape, dtype):
    if out is None:
        return None
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a numpy.ndarray, got {type(out).__name__}")
    if out.shape != shape:
        raise ValueError(f"out has shape {out.shape}, but the result has shape {shape}")
    if out.dtype != dtype:
        raise ValueError(f"out has dtype {out.dtype}, but the result has dtype {dtype}")
    if not out.flags.writeable:
        raise ValueError("out is read-only")
    return out


def _prepare(arr, comp):
    """arr in the computation dtype, native byte order and aligned (a copy only when needed). A forced narrower
    dtype rounds out-of-range values to +-inf, as a cast does, without a warning."""
    if arr.dtype != comp or not arr.flags.aligned:
        with np.errstate(over="ignore"):
            return arr.astype(comp)
    return arr


# ---------------------------------------------------------------------------------------------------------
# The copying path
# ---------------------------------------------------------------------------------------------------------

def _run_copying(inputs, comp, axes, target, kernel_call):
    """For what the kernels' direct layout check refused (non-adjacent axes, a narrow inner block, strides that
    need a copy, another result dtype, an out= that overlaps an input or is misaligned): move the reduced axes to
    the end in one C-ordered copy per input, which the kernels always accept, compute into a scratch buffer and
    copy the result back into `target`."""
    ndim = inputs[0].ndim
    rest = tuple(a for a in range(ndim) if a not in axes)
    perm = rest + tuple(axes)
    moved = [np.ascontiguousarray(np.transpose(a, perm)) for a in inputs]
    scratch = _new_result(moved[0], comp)
    if not kernel_call(moved, scratch, len(rest), ndim - 1):  # pragma: no cover - C-ordered always fits
        raise AssertionError("fastsoftmax: the kernels refused a C-ordered buffer")
    return _copy_into(target, np.transpose(scratch, np.argsort(perm)))


def _new_result(like, dtype):
    """An uninitialized C-ordered array of like's shape: through the cache of freed results when it is large (the
    size test here spares small calls the cache's own call)."""
    if like.size * dtype.itemsize >= _buffers.min_bytes:
        return _buffers.empty(like.shape, dtype)
    return np.empty(like.shape, dtype)


def _adjacent(axes):
    return bool(axes) and axes[-1] - axes[0] + 1 == len(axes)


def _forward(x, axis, out, dtype, num_threads, log_softmax):
    arr = _as_array(x, "x")
    comp, res = _dtypes(arr.dtype, dtype, "x")
    if arr.ndim == 0:
        _axes(axis, 0)
        result = _forward(arr.reshape(1), 0, None, dtype, num_threads, log_softmax).reshape(())
        return result if out is None else _copy_into(_check_out(out, (), res), result)
    axes = _axes(axis, arr.ndim)
    out = _check_out(out, arr.shape, res)
    n_threads = _threads.requested(num_threads)
    arr = _prepare(arr, comp)
    target = out if out is not None else _new_result(arr, res)
    if target.size == 0:
        return target
    if res == comp and _adjacent(axes) and _k.forward_axes(arr, target, axes[0], axes[-1], log_softmax, n_threads):
        return target
    return _run_copying([arr], comp, axes, target, lambda xs, dst, first, last: _k.forward_axes(
        xs[0], dst, first, last, log_softmax, n_threads))


def _copy_into(out, value):
    with np.errstate(over="ignore"):  # float32 -> float16 rounds large values to +-inf, as intended
        np.copyto(out, value, casting="same_kind")
    return out


def _backward(grad_output, output, axis, out, num_threads, log_softmax):
    # the per-call fast path for plain arrays, out= included (see lastaxis_backward)
    n = 0 if num_threads is None else _threads.requested(num_threads)  # inline: see softmax
    result = _k.lastaxis_backward(grad_output, output, out, axis, log_softmax, n)
    if result is not None:
        return result
    g = _as_array(grad_output, "grad_output")
    y = _as_array(output, "output")
    if g.shape != y.shape:
        raise ValueError(f"grad_output has shape {g.shape} but output has shape {y.shape}; they must match")
    if g.dtype.newbyteorder("=") != y.dtype.newbyteorder("="):
        raise ValueError(f"grad_output has dtype {g.dtype} but output has dtype {y.dtype}; they must match")
    comp, res = _dtypes(y.dtype, None, "output")
    if g.ndim == 0:
        _axes(axis, 0)
        result = _backward(g.reshape(1), y.reshape(1), 0, None, num_threads, log_softmax).reshape(())
        return result if out is None else _copy_into(_check_out(out, (), res), result)
    axes = _axes(axis, g.ndim)
    out = _check_out(out, g.shape, res)
    n_threads = n
    g = _prepare(g, comp)
    y = _prepare(y, comp)
    target = out if out is not None else _new_result(g, res)
    if target.size == 0:
        return target
    if res == comp and _adjacent(axes) and _k.backward_axes(g, y, target, axes[0], axes[-1], log_softmax,
                                                             n_threads):
        return target
    return _run_copying([g, y], comp, axes, target, lambda gy, dst, first, last: _k.backward_axes(
        gy[0], gy[1], dst, first, last, log_softmax, n_threads))


# ---------------------------------------------------------------------------------------------------------
# Public functions
# ---------------------------------------------------------------------------------------------------------

def softmax(x, axis=-1, *, out=None, dtype=None, num_threads=None):
    r"""softmax(x, axis=-1, *, out=None, dtype=None, num_threads=None)

    Numerically stable softmax: ``exp(x - max(x)) / sum(exp(x - max(x)))`` over `axis`.

    A drop-in for ``scipy.special.softmax`` (same axis semantics, same results within rounding), computed by
    multithreaded SIMD kernels with the GIL released.

    Parameters
    ----------
    x : array_like
        Input logits. float32 and float64 are computed natively, float16 in float32 (returned as float16),
        bool and integers as float64. Complex, object, string and datetime inputs raise TypeError.
    axis : int, tuple of ints or None, optional
        Axis or axes over which each softmax is taken (a tuple means the joint slice over those axes, None
        means all elements). Default: the last axis.
    out : ndarray, optional
        Where to write the result: exactly the result's shape and dtype, any strides; may be `x` itself
        (in place). It is returned.
    dtype : {None, float32, float64}, optional
        Force the computation and result dtype.
    num_threads : int, optional
        Maximum number of threads for this call (default: `get_num_threads`). Small inputs run on one thread.

    Returns
    -------
    ndarray
        Same shape as `x`; a new C-contiguous array unless `out` is given. Each slice sums to 1.

    Raises
    ------
    numpy.exceptions.AxisError
        If an axis is out of bounds.
    ValueError
        On a repeated axis, or an `out` of the wrong shape or dtype.
    TypeError
        On an unsupported dtype.

    Notes
    -----
    A slice containing NaN or +inf is all NaN; a slice of only -inf is all NaN; -inf next to a finite
    maximum gives exactly 0. No floating-point warnings are emitted.

    Examples
    --------
    >>> import numpy as np
    >>> from fastsoftmax import softmax
    >>> softmax(np.array([1.0, 2.0, 3.0]))
    array([0.09003057, 0.24472847, 0.66524096])
    >>> softmax(np.array([[0.0, 0.0], [0.0, np.log(3.0)]]), axis=0)
    array([[0.5 , 0.25],
           [0.5 , 0.75]])
    """
    if dtype is None:  # the per-call fast path for plain arrays, out= included (see lastaxis)
        # (num_threads is None inline: a function call would be 4% of a 1 us call)
        result = _k.lastaxis(x, out, axis, False, 0 if num_threads is None else _threads.requested(num_threads))
        if result is not None:
            return result
    return _forward(x, axis, out, dtype, num_threads, False)


def log_softmax(x, axis=-1, *, out=None, dtype=None, num_threads=None):
    r"""log_softmax(x, axis=-1, *, out=None, dtype=None, num_threads=None)

    Numerically stable log-softmax: ``x - max(x) - log(sum(exp(x - max(x))))`` over `axis`.

    Parameters
    ----------
    x : array_like
        Input logits (dtype rules as in `softmax`).
    axis : int, tuple of ints or None, optional
        Axis or axes of each slice (as in `softmax`). Default: the last axis.
    out : ndarray, optional
        Output array of the result's shape and dtype; may be `x` (in place).
    dtype : {None, float32, float64}, optional
        Force the computation and result dtype.
    num_threads : int, optional
        Maximum number of threads for this call.

    Returns
    -------
    ndarray
        Same shape as `x`; ``exp`` of it sums to 1 over each slice.

    Raises
    ------
    numpy.exceptions.AxisError, ValueError, TypeError
        As `softmax`.

    Notes
    -----
    -inf next to a finite maximum stays -inf; a slice containing NaN or +inf, or only -inf, is all NaN.
    Matches ``scipy.special.log_softmax`` within rounding.

    Examples
    --------
    >>> import numpy as np
    >>> from fastsoftmax import log_softmax
    >>> log_softmax(np.array([1.0, 2.0, 3.0]))
    array([-2.40760596, -1.40760596, -0.40760596])
    """
    if dtype is None:  # the per-call fast path for plain arrays, out= included (see lastaxis)
        # (num_threads is None inline: a function call would be 4% of a 1 us call)
        result = _k.lastaxis(x, out, axis, True, 0 if num_threads is None else _threads.requested(num_threads))
        if result is not None:
            return result
    return _forward(x, axis, out, dtype, num_threads, True)


def softmax_backward(grad_output, output, axis=-1, *, out=None, num_threads=None):
    r"""softmax_backward(grad_output, output, axis=-1, *, out=None, num_threads=None)

    Gradient of a loss with respect to the logits of ``output = softmax(x, axis)``.

    Computes the vector-Jacobian product ``output * (grad_output - sum(grad_output * output, axis))``.

    Parameters
    ----------
    grad_output : array_like
        Gradient of the loss with respect to `output`.
    output : array_like
        The softmax result; same shape and dtype as `grad_output`.
    axis : int, tuple of ints or None, optional
        The axis (or axes) the forward softmax was taken over. Default: the last axis.
    out : ndarray, optional
        Output array of the result's shape and dtype; may be `grad_output` or `output`.
    num_threads : int, optional
        Maximum number of threads for this call.

    Returns
    -------
    ndarray
        Gradient with respect to the logits, same shape as `output`.

    Raises
    ------
    ValueError
        If `grad_output` and `output` differ in shape or dtype, or `out` does not match.

    Examples
    --------
    >>> import numpy as np
    >>> from fastsoftmax import softmax, softmax_backward
    >>> y = softmax(np.array([0.0, 0.0]))
    >>> softmax_backward(np.array([1.0, 0.0]), y)
    array([ 0.25, -0.25])
    """
    return _backward(grad_output, output, axis, out, num_threads, False)


def log_softmax_backward(grad_output, output, axis=-1, *, out=None, num_threads=None):
    r"""log_softmax_backward(grad_output, output, axis=-1, *, out=None, num_threads=None)

    Gradient of a loss with respect to the logits of ``output = log_softmax(x, axis)``.

    Computes the vector-Jacobian product ``grad_output - exp(output) * sum(grad_output, axis)``.

    Parameters
    ----------
    grad_output : array_like
        Gradient of the loss with respect to `output`.
    output : array_like
        The log_softmax result; same shape and dtype as `grad_output`.
    axis : int, tuple of ints or None, optional
        The axis (or axes) the forward log_softmax was taken over. Default: the last axis.
    out : ndarray, optional
        Output array of the result's shape and dtype; may be `grad_output` or `output`.
    num_threads : int, optional
        Maximum number of threads for this call.

    Returns
    -------
    ndarray
        Gradient with respect to the logits, same shape as `output`.

    Raises
    ------
    ValueError
        If `grad_output` and `output` differ in shape or dtype, or `out` does not match.

    Examples
    --------
    >>> import numpy as np
    >>> from fastsoftmax import log_softmax, log_softmax_backward
    >>> y = log_softmax(np.array([0.0, 0.0]))
    >>> log_softmax_backward(np.array([1.0, 0.0]), y)
    array([ 0.5, -0.5])
    """
    return _backward(grad_output, output, axis, out, num_threads, True)


def empty_cache():
    r"""empty_cache()

    Release the memory fastsoftmax keeps from results that are no longer used.

    A result of 32 MiB or more is allocated through a small cache: when the array is freed, its memory is kept
    (at most two blocks, 1 GiB in all) and the next result of exactly that size reuses it, instead of new memory
    whose page faults would cost about as much as the softmax itself. This returns that memory to the system.

    Returns
    -------
    int
        The number of bytes released.

    Examples
    --------
    >>> import numpy as np
    >>> import fastsoftmax
    >>> p = fastsoftmax.softmax(np.zeros((8192, 1024), np.float32))   # 32 MiB
    >>> del p                      # its memory is kept for the next result of that size
    >>> fastsoftmax.empty_cache() >= 8192 * 1024 * 4
    True
    """
    return _buffers.clear()


def softmax_jacobian(output, axis=-1):
    r"""softmax_jacobian(output, axis=-1)

    Explicit Jacobian ``diag(y) - y y^T`` of softmax at each slice of ``y = output``.

    Meant for teaching and for checking gradients: it costs O(n^2) memory per slice, where
    `softmax_backward` costs O(n).

    Parameters
    ----------
    output : array_like
        A softmax result ``y = softmax(x, axis)`` (dtype rules as in `softmax`).
    axis : int, tuple of ints or None, optional
        The axis (or axes) of each slice. Default: the last axis.

    Returns
    -------
    ndarray of shape (..., n, n)
        The other axes first (in order), then the n x n Jacobian of each slice, where n is the slice size.
        ``J[..., i, j] = d y_i / d x_j``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastsoftmax import softmax_jacobian
    >>> softmax_jacobian(np.array([0.5, 0.5]))
    array([[ 0.25, -0.25],
           [-0.25,  0.25]])
    """
    y = _as_array(output, "output")
    comp, res = _dtypes(y.dtype, None, "output")
    if y.ndim == 0:
        _axes(axis, 0)
        y = y.reshape(1)
        axis = 0
    axes = _axes(axis, y.ndim)
    rest = [a for a in range(y.ndim) if a not in axes]
    y = np.transpose(y.astype(comp, copy=False), rest + list(axes))
    n = int(np.prod(y.shape[len(rest):], dtype=np.int64))
    y = y.reshape(y.shape[:len(rest)] + (n,))
    with np.errstate(over="ignore", invalid="ignore"):  # non-probability inputs give inf/nan, as the formula does
        jac = -y[..., :, None] * y[..., None, :]
        idx = np.arange(n)
        jac[..., idx, idx] += y
    return jac.astype(res, copy=False)

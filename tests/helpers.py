"""Helpers shared by several test modules: independent references (no fastsoftmax code), and one assertion that
runs the function under test on whole batches and on their rows alone."""
import numpy as np
from numpy.testing import assert_array_equal


def central_differences(loss, x, h=1e-6):
    """Gradient of the scalar function `loss` at x by central differences (float64)."""
    grad = np.empty_like(x)
    for i in np.ndindex(*x.shape):
        step = np.zeros_like(x)
        step[i] = h
        grad[i] = (loss(x + step) - loss(x - step)) / (2 * h)
    return grad


def assert_rows_as_alone(fn, arrays, rows):
    """fn over whole batches of rows (arrays: its array operands; the first is also the in-place target) gives, at
    one thread and two and in place, bitwise the results of the sampled rows computed alone. Returns the in-place
    result."""
    expected = np.stack([fn(*(a[r] for a in arrays)) for r in rows])
    for threads in (1, 2):
        assert_array_equal(fn(*arrays, num_threads=threads)[rows], expected)
    inplace = arrays[0].copy()
    assert fn(inplace, *arrays[1:], out=inplace, num_threads=1) is inplace
    assert_array_equal(inplace[rows], expected)
    return inplace

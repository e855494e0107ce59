"""fastsoftmax: fast, numerically stable softmax, log-softmax and their backward passes for NumPy arrays."""
from ._api import (empty_cache, log_softmax, log_softmax_backward, softmax, softmax_backward,  # noqa: F401
                   softmax_jacobian)
from ._config import show_config  # noqa: F401
from ._threads import get_num_threads, set_num_threads  # noqa: F401
from ._version import __version__  # noqa: F401

__all__ = [
    "softmax", "log_softmax", "softmax_backward", "log_softmax_backward", "softmax_jacobian",
    "get_num_threads", "set_num_threads", "empty_cache", "show_config", "__version__",
]

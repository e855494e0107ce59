# The kernels compiled for the "baseline" SIMD target (flags in setup.py). The source is shared by every target.
include "_kernels.pxi"

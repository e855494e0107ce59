# The kernels compiled for the "avx512" SIMD target (flags in setup.py). The source is shared by every target.
include "_kernels.pxi"

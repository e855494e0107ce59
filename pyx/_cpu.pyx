# CPU feature probe, compiled for the baseline target so that it runs on every x86-64 CPU: it is what decides
# which kernel module (fastsoftmax._kernels_<target>) is safe to import. gcc/clang's __builtin_cpu_supports also
# checks that the OS saves the wide registers (XGETBV), not only the CPUID bits.
cdef extern from *:
    """
    #if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
    static int fsm_has_avx2(void) {
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    }
    static int fsm_has_avx512(void) {
        __builtin_cpu_init();
        return fsm_has_avx2() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
            && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
    }
    #else
    static int fsm_has_avx2(void) { return 0; }
    static int fsm_has_avx512(void) { return 0; }
    #endif
    """
    int fsm_has_avx2() noexcept nogil
    int fsm_has_avx512() noexcept nogil


def supported_levels():
    """SIMD levels this CPU can run, narrowest first: a sublist of ["baseline", "avx2", "avx512"]."""
    levels = ["baseline"]
    if fsm_has_avx2():
        levels.append("avx2")
    if fsm_has_avx512():
        levels.append("avx512")
    return levels

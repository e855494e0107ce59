# The only place that touches OpenMP (the scikit-learn convention): every kernel module cimports the OpenMP
# routines from here, so a compiler without OpenMP still builds a serial library from the same sources.
cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    #define FSM_OPENMP_VERSION _OPENMP
    #else
    #define FSM_OPENMP_VERSION 0
    static int omp_get_max_threads(void) { return 1; }
    #endif
    """
    const int FSM_OPENMP_VERSION  # yyyymm of the OpenMP spec the compiler implements; 0 without OpenMP
    int omp_get_max_threads() noexcept nogil

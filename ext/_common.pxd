# cython: language_level=3
"""Declarations shared by the detection kernels (ext/_kernels.pyx and the family groups it
includes): the sample codes, the vectorized passes, the event buffer, the debounce, and the
state each family's step works on.

A family's step is one ``cdef inline`` function over its state struct (see ``Step``): the
per-sample loop and the whole-tick path's block both call it, and the generic loops in
ext/_kernels.pyx are specialized per family at compile time (a fused type, not a call through
a pointer), so that the C compiler inlines the step into each loop.
"""

from libc.math cimport isnan

# Samples of these qualities carry no usable value: they leave every statistic untouched.
# COMM_FAIL samples are the agent's comm alarm, skipped even by the sensor family.
cdef enum:
    Q_GOOD = 0
    Q_BAD = 2
    Q_COMM_FAIL = 3

cdef enum:
    # whole-tick path, slots per pass: small enough that one alarm among 100,000 tags sends few
    # quiet slots through the per-sample logic, large enough that the call per block costs little
    TICK_BLOCK = 256

# max(x, 0) without a branch: on noise the sign of a CUSUM sum is a coin toss, and a
# mispredicted branch costs more than the whole update. Neither libm's fmax (on x86-64 an
# out-of-line call, because of its NaN rules, unless built with -ffast-math) nor a conditional
# (which gcc turns back into a branch when later tests reuse the comparison) is reliably
# branch-free; SSE2's maxsd (every x86-64) and AArch64's fmaxnm (what fmax compiles to there) are.
# Both give 0 for a NaN argument, as fmax(NaN, 0) does.
cdef extern from *:
    """
    #if defined(__SSE2__) || defined(_M_X64)
    #include <emmintrin.h>
    static inline double pw_max0(double x) {
        return _mm_cvtsd_f64(_mm_max_sd(_mm_set_sd(x), _mm_setzero_pd()));
    }
    #else
    #include <math.h>
    static inline double pw_max0(double x) { return fmax(x, 0.0); }
    #endif
    """
    double _max0 "pw_max0"(double x) nogil

# Branch hints (the macros every Cython module defines): the loops' common case, a sample that
# leaves its slot's level alone, laid out as the straight path.
cdef extern from *:
    bint likely(bint) nogil

# The vectorized passes of the whole-tick path.
cdef extern from "_simd.h" nogil:
    int pw_whole_ticks(Py_ssize_t n, const int* tag, Py_ssize_t n_slots, const int* tag_of_slot)
    unsigned char pw_max_quality(Py_ssize_t n, const unsigned char* q)
    int pw_limit_tick(Py_ssize_t n, const double* v, const double* hi, const double* lo,
                      const double* gate)
    int pw_ewma_tick(Py_ssize_t n, const double* v, const double* lam, double* z, const double* qlo,
                     const double* qhi)
    int pw_ewma_tick1(Py_ssize_t n, const double* v, double lam, double* z, const double* qlo,
                      const double* qhi)
    int pw_cusum_tick(Py_ssize_t n, const double* v, const double* mean, const double* isig,
                      const double* k, const double* h, double* sp, double* sn, const double* gate)


# ----------------------------------------------------------------------------------------------
# Shared state. The structs hold plain pointers into the kernel's arrays (which own the memory):
# the loops copy them into locals, which the C compiler keeps in registers instead of reloading
# each memoryview's data pointer from the kernel after every store.

cdef struct Events:
    # one row per condition change: sample index, previous level, new level, detail
    Py_ssize_t* idx
    signed char* prev
    signed char* new
    double* x

cdef struct Debounce:
    signed char* lvl                        # reported level
    signed char* pend                       # raw level whose delay is running
    double* since                           # when pend began
    const double* on                        # on-delay (towards more severe), s
    const double* off                       # off-delay (towards less severe), s
    # whole-tick kernels only (NULL elsewhere): the level as float64, NaN while a transition is
    # pending; a slot needs the per-sample logic exactly when its raw level differs from it
    double* gate

cdef struct Run:
    # a batch as whole ticks: ticks ticks (0: not whole ticks) of the width slots from first
    Py_ssize_t ticks, first, width


cdef inline int _slot(const int* slot, Py_ssize_t n_map, int t) noexcept nogil:
    """The slot of tag t, -1 when the family does not watch it."""
    if <size_t>t >= <size_t>n_map:  # one unsigned compare: negative or past the map
        return -1
    return slot[t]


cdef inline bint _usable(double v, unsigned char q) noexcept nogil:
    return q < Q_BAD and not isnan(v)


# Debounce shared by every family: the raw level from the detector, then on-delay (towards a
# more severe level or into alarm), then off-delay (towards a less severe level or normal).
# A pending transition's timer restarts whenever the raw level changes before it expires.

cdef inline bint _more_severe(signed char raw, signed char lvl) noexcept nogil:
    if raw == 0:
        return False
    if lvl == 0 or (raw > 0) != (lvl > 0):
        return True
    return (raw if raw > 0 else -raw) > (lvl if lvl > 0 else -lvl)


cdef inline bint _debounce(signed char raw, double t, signed char* lvl, signed char* pend,
                           double* since, double on_delay, double off_delay) noexcept nogil:
    """Advance the reported level; True when it changed (the new level is in lvl[0])."""
    cdef double delay
    if raw == lvl[0]:
        pend[0] = raw
        return False
    if raw != pend[0]:
        pend[0] = raw
        since[0] = t
    delay = on_delay if _more_severe(raw, lvl[0]) else off_delay
    if t - since[0] >= delay:
        lvl[0] = raw
        return True
    return False


# ----------------------------------------------------------------------------------------------
# Each family's state as its step sees it (parameters first, then state).

# thresholds (ext/_thresholds.pxi)
cdef struct LimitStep:
    const double* hh
    const double* h
    const double* l
    const double* ll
    const double* db
    signed char* raw                        # raw level before the debounce (deadband memory)

cdef struct RocStep:
    const double* max_per_s
    const double* window
    double* anchor_v                        # NaN until the first usable sample
    double* anchor_t
    signed char* raw                        # held between measurements

cdef struct SensorStep:
    const double* lo
    const double* hi

# control charts (ext/_charts.pxi); warming counts the slots still in warm-up
cdef struct EwmaStep:
    const double* lam
    const double* L
    const double* min_sigma
    const long long* warmup
    long long* count
    double* mean
    double* m2
    double* z
    double* ucl
    double* lcl
    double* qlo                             # the whole-tick pass's quiet band (see _ewma_band)
    double* qhi
    const double* gate
    Py_ssize_t* warming

cdef struct CusumStep:
    const double* k
    const double* h
    const double* min_sigma
    const long long* warmup
    long long* count
    double* mean
    double* m2
    double* isig
    double* sp
    double* sn
    Py_ssize_t* warming

# windows (ext/_windows.pxi)
cdef struct RobustStep:
    const long long* window
    const double* threshold
    const double* min_mad
    Py_ssize_t width                        # row length of ring and sorted
    double* ring                            # [slot, width]: the window in arrival order
    double* sorted                          # [slot, width]: the same values sorted
    long long* count
    long long* pos

cdef struct FlatlineStep:
    const double* eps
    const double* duration
    double* ref_v                           # the value that began the flat stretch (NaN: none)
    double* ref_t

ctypedef fused Step:
    LimitStep
    RocStep
    SensorStep
    EwmaStep
    CusumStep
    RobustStep
    FlatlineStep

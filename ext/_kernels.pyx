# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Univariate detection kernels: one call judges a whole batch of samples.

Each kernel keeps its state as struct-of-arrays indexed by a *slot* (the position of a watched
tag in the family; ``slot[tag] == -1`` for tags the family does not watch) and appends one event
per condition change to its output buffers: the sample index, the previous level and the new
level (plus one float of detail where the family has one). Parameters are validated in Python
before they reach here; the loops assume valid, contiguous input and run without the GIL.
The limit, ewma and cusum kernels also take batches of whole ticks through vectorized passes
(see _TickKernel); the result is the same.

Levels are small integers: 0 normal, 1 H, 2 HH, -1 L, -2 LL. Families with a single alarm
(statistical detectors, sensor) use 0 normal and 1/-1 for "high"/"low" direction or 1 active.
"""

import numpy as np

from libc.math cimport fabs, isnan, nextafter, sqrt, INFINITY, NAN
from libc.string cimport memmove
from libc.float cimport DBL_MAX

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

# The vectorized passes of the whole-tick path (see _TickKernel).
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

# Samples of these qualities carry no usable value: they leave every statistic untouched.
cdef enum:
    Q_BAD = 2


cdef class _Kernel:
    """Shared slot map and event buffers."""

    cdef public object slot_of_tag          # int32[n_tags], -1 = not watched
    cdef int[::1] slot
    cdef Py_ssize_t n_map
    cdef public Py_ssize_t n_slots
    cdef Py_ssize_t[::1] ev_idx
    cdef signed char[::1] ev_prev
    cdef signed char[::1] ev_new
    cdef double[::1] ev_x
    cdef Py_ssize_t cap

    def __init__(self, slot_of_tag):
        arr = np.ascontiguousarray(slot_of_tag, dtype=np.int32)
        self.slot_of_tag = arr
        self.slot = arr
        self.n_map = arr.shape[0]
        self.n_slots = int(arr.max()) + 1 if arr.shape[0] and arr.max() >= 0 else 0
        self._reserve(256)

    cdef _reserve(self, Py_ssize_t n):
        if n <= self.cap:
            return
        self.cap = max(n, 2 * self.cap)
        self.ev_idx = np.empty(self.cap, dtype=np.intp)
        self.ev_prev = np.empty(self.cap, dtype=np.int8)
        self.ev_new = np.empty(self.cap, dtype=np.int8)
        self.ev_x = np.empty(self.cap, dtype=np.float64)

    cdef object _events(self, Py_ssize_t n):
        """The first n events as (sample index, previous level, new level, detail) arrays, or
        None when nothing changed (the common case, kept allocation-free)."""
        if n == 0:
            return None
        return (
            np.asarray(self.ev_idx[:n]).copy(),
            np.asarray(self.ev_prev[:n]).copy(),
            np.asarray(self.ev_new[:n]).copy(),
            np.asarray(self.ev_x[:n]).copy(),
        )

    cdef inline Py_ssize_t _emit(self, Py_ssize_t n, Py_ssize_t i, signed char prev, signed char new,
                                 double x) noexcept nogil:
        self.ev_idx[n] = i
        self.ev_prev[n] = prev
        self.ev_new[n] = new
        self.ev_x[n] = x
        return n + 1


# ----------------------------------------------------------------------------------------------
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
# Whole-tick path (limit, ewma, cusum). A device read delivers a tick: each of its tags once, in
# tag order. Slots follow tag order, so when the family watches every tag of the read those
# tags are a run of consecutive slots (all of them when the family watches exactly the batch's
# tags). When a batch is k ticks of one such run, none of them BAD or COMM_FAIL, and (control
# charts) every slot is past its warm-up, a tick's statistic update is an elementwise pass over
# the run's slice of the slot arrays (ext/_simd.h, vectorized), in blocks of TICK_BLOCK slots. The per-sample logic (raw level, CUSUM
# restart, debounce, events) then runs only over the blocks where the pass found a slot whose
# level may change, NaN samples skipped there exactly as in the per-sample loop. Any other
# batch takes the per-sample loop. Both give the same state and the same events in the same
# order: each slot's state depends on its own samples only, and the blocks go in slot order.

cdef enum:
    # slots per pass: small enough that one alarm among 100,000 tags sends few quiet slots
    # through the per-sample logic, large enough that the call per block costs little
    TICK_BLOCK = 256


cdef enum:
    # frozen tag arrays whose answer a kernel keeps (one per device read plan and batch shape)
    MAX_PLANS = 64


cdef bint _frozen(object tags):
    """True for an ndarray whose contents can never change: read-only, and its memory an
    immutable bytes object (numpy refuses to make such an array, or any view of it, writeable)."""
    cdef object base
    if type(tags) is not np.ndarray or tags.flags.writeable:
        return False
    base = tags.base
    while type(base) is np.ndarray:
        base = base.base
    return type(base) is bytes


cdef class _TickKernel(_Kernel):
    """Debounce state shared by the kernels with a whole-tick path, and its float64 gate."""

    cdef public object level, pending, since
    cdef readonly object tag_of_slot        # int32[n_slots]: a tag of each slot (-1 if none)
    cdef readonly Py_ssize_t fast_ticks     # ticks judged by the whole-tick path so far
    cdef public bint fast                   # False: always the per-sample loop (for comparison)
    cdef int[::1] _tag_of_slot
    cdef signed char[::1] _lvl, _pend
    cdef double[::1] _since
    # The level as float64, NaN while a transition is pending: a slot needs the per-sample
    # logic exactly when its raw level differs from its gate (the skip test of the loops).
    # The state arrays are for reading: the gate follows them only through _settle.
    cdef double[::1] _gate
    cdef bint _tiled                        # every slot has a tag, so whole ticks exist
    cdef Py_ssize_t n_warming               # slots still in warm-up (control charts)
    cdef Py_ssize_t _first, _width          # the run of slots of the batch _ticks accepted
    cdef dict _plans                        # id(frozen tag array) -> (array, ticks, first, width)

    def __init__(self, slot_of_tag, fast=True):
        _Kernel.__init__(self, slot_of_tag)
        n = self.n_slots
        tag_of_slot = np.full(n, -1, dtype=np.int32)
        watched = np.flatnonzero(self.slot_of_tag >= 0)
        # where two tags share a slot either one identifies it: tag == tag_of_slot[s] still
        # implies slot[tag] == s
        tag_of_slot[self.slot_of_tag[watched]] = watched
        self.tag_of_slot = self._tag_of_slot = tag_of_slot
        self._tiled = n > 0 and bool((tag_of_slot >= 0).all())
        self.fast = fast
        self.level = np.zeros(n, dtype=np.int8)
        self.pending = np.zeros(n, dtype=np.int8)
        self.since = np.zeros(n)
        self._lvl, self._pend, self._since = self.level, self.pending, self.since
        self._gate = np.zeros(n)
        self._plans = {}

    cdef Py_ssize_t _run(self, Py_ssize_t n, const int* tag) noexcept nogil:
        """The number of ticks when the n tags of a batch are whole ticks of a run of slots,
        else 0; the run in _first, _width."""
        cdef Py_ssize_t a, m, room
        cdef int t0
        t0 = tag[0]
        if <size_t>t0 >= <size_t>self.n_map:
            return 0
        a = self.slot[t0]
        if a < 0:
            return 0
        room = self.n_slots - a
        # ticks of every slot, the common case, need no search for the tick's end
        if a == 0 and n % room == 0 and pw_whole_ticks(n, tag, room, &self._tag_of_slot[0]):
            self._first, self._width = 0, room
            return n // room
        # a tick ends before the first tag comes again, and cannot run past the last slot
        m = 1
        while m < n and m < room and tag[m] != t0:
            m += 1
        if n % m or not pw_whole_ticks(n, tag, m, &self._tag_of_slot[a]):
            return 0
        self._first, self._width = a, m
        return n // m

    cdef Py_ssize_t _whole(self, Py_ssize_t ticks, const double* value, const double* ts) noexcept nogil:
        """Judge ``ticks`` ticks of the run _ticks accepted: per tick and block of slots, the
        kernel's vectorized _pass, then its per-sample _block where the pass flags work;
        returns the number of events."""
        cdef Py_ssize_t a = self._first, m = self._width, j, b, e, n_ev = 0
        cdef const double* v
        for j in range(ticks):
            v = value + j * m  # v[s - a] is the sample of slot s (a <= s < a + m)
            e = a
            while e < a + m:
                b = e
                e = b + TICK_BLOCK if b + TICK_BLOCK < a + m else a + m
                if self._pass(b, e, v + (b - a)):
                    n_ev = self._block(j, b, e, v, ts, n_ev)
        self.fast_ticks += ticks
        return n_ev

    cdef bint _pass(self, Py_ssize_t b, Py_ssize_t e, const double* v) noexcept nogil:
        """The kernel's vectorized pass over slots b..e-1 (v[0] is slot b's sample): updates
        their statistics, nonzero when some slot may change level."""
        return True

    cdef Py_ssize_t _block(self, Py_ssize_t j, Py_ssize_t b, Py_ssize_t e, const double* v, const double* ts,
                           Py_ssize_t n_ev) noexcept nogil:
        """The per-sample logic for slots b..e-1 of tick j after its pass (v[s - _first] is
        slot s's sample, ts the batch's times); returns the event count."""
        return n_ev

    cdef Py_ssize_t _ticks(self, object tags, Py_ssize_t n, const int* tag, const unsigned char* quality):
        """The number of ticks when a batch of n samples takes the whole-tick path, else 0; the
        run of slots its ticks cover in _first, _width.

        A read plan's tag array is checked once: a driver lists a device's tags in the same
        array at every read, and when that array is frozen (read-only, its memory an immutable
        bytes object, see drivers.base.frozen_tags) its answer is kept, with a reference to the
        array so that its id names it for as long as the answer is kept."""
        cdef Py_ssize_t ticks
        cdef tuple known
        if not self.fast or not self._tiled or self.n_warming or n == 0:
            return 0
        if pw_max_quality(n, quality) >= Q_BAD:
            return 0
        known = self._plans.get(id(tags))
        if known is not None and known[0] is tags:
            self._first, self._width = known[2], known[3]
            return known[1]
        with nogil:
            ticks = self._run(n, tag)
        if _frozen(tags):
            if len(self._plans) >= MAX_PLANS:
                self._plans.clear()
            self._plans[id(tags)] = (tags, ticks, self._first, self._width)
        return ticks

    cdef bint _by_ticks(self, object tags, Py_ssize_t n, const int* tag, const double* value, const double* ts,
                        const unsigned char* quality, Py_ssize_t* n_ev):
        """Judge the batch by the whole-tick path when it qualifies (events counted in n_ev);
        False when it takes the per-sample loop."""
        cdef Py_ssize_t ticks = self._ticks(tags, n, tag, quality)
        if not ticks:
            return False
        with nogil:
            n_ev[0] = self._whole(ticks, value, ts)
        return True

    cdef inline bint _settle(self, Py_ssize_t s, signed char r, double t, double on_delay,
                             double off_delay) noexcept nogil:
        """_debounce for slot s, keeping its gate. Both loops debounce through here."""
        cdef bint changed = _debounce(r, t, &self._lvl[s], &self._pend[s], &self._since[s], on_delay, off_delay)
        self._gate[s] = self._lvl[s] if self._pend[s] == self._lvl[s] else NAN
        self._gate_changed(s)
        return changed

    cdef void _gate_changed(self, Py_ssize_t s) noexcept nogil:
        """Called after slot s's gate is set: for a kernel that keeps more of the pass's
        skip test per slot (ewma's quiet band)."""
        pass


# ----------------------------------------------------------------------------------------------
# limit: HH/H/L/LL with deadband on return (ISA-18.2, OPC UA Part 9 LimitAlarmType)

cdef inline signed char _limit_raw(double v, signed char r, double hh, double h, double l,
                                   double ll, double db) noexcept nogil:
    # NaN limits compare false, so unset limits never enter and never hold.
    cdef signed char hi = 0, lo = 0
    if v >= hh or (r >= 2 and v > hh - db):
        hi = 2
    elif v >= h or (r >= 1 and v > h - db):
        hi = 1
    if v <= ll or (r <= -2 and v < ll + db):
        lo = -2
    elif v <= l or (r <= -1 and v < l + db):
        lo = -1
    if hi != 0 and lo != 0:
        # Only possible when a wide deadband still holds one side while the value has entered
        # the other: entering wins over holding.
        return lo if r > 0 else hi
    return hi if hi != 0 else lo


cdef class LimitKernel(_TickKernel):
    """State of the limit family; one slot per tag that has an ``alarms`` table."""

    cdef public object hh, h, l, ll, deadband, on_delay, off_delay, raw
    cdef double[::1] _hh, _h, _l, _ll, _db, _on, _off, _enter_hi, _enter_lo
    cdef signed char[::1] _raw

    def __init__(self, slot_of_tag, hh, h, l, ll, deadband, on_delay, off_delay, fast=True):
        _TickKernel.__init__(self, slot_of_tag, fast)
        n = self.n_slots
        self.hh = _param(hh, n)
        self.h = _param(h, n)
        self.l = _param(l, n)
        self.ll = _param(ll, n)
        self.deadband = _param(deadband, n)
        self.on_delay = _param(on_delay, n)
        self.off_delay = _param(off_delay, n)
        self.raw = np.zeros(n, dtype=np.int8)
        self._hh, self._h, self._l, self._ll = self.hh, self.h, self.l, self.ll
        self._db, self._on, self._off = self.deadband, self.on_delay, self.off_delay
        self._raw = self.raw
        # the nearest limit a normal value enters on either side (+-inf when none is set): the
        # whole-tick path's test that a quiet tick stays quiet
        hi, lo = np.fmin(self.h, self.hh), np.fmax(self.l, self.ll)
        self._enter_hi = np.where(np.isnan(hi), np.inf, hi)
        self._enter_lo = np.where(np.isnan(lo), -np.inf, lo)

    def update(self, tags, const double[::1] value, const double[::1] ts,
               const unsigned char[::1] quality):
        cdef const int[::1] tag = tags
        cdef Py_ssize_t n = tag.shape[0], i, n_ev = 0
        cdef int t, s
        cdef double v
        cdef signed char r, prev
        self._reserve(n)
        if self._by_ticks(tags, n, &tag[0] if n else NULL, &value[0] if n else NULL, &ts[0] if n else NULL,
                          &quality[0] if n else NULL, &n_ev):
            return self._events(n_ev)
        # hot state as plain pointers (kept in registers, not reloaded from self after stores)
        cdef const int* slot = &self.slot[0] if self.n_map else NULL
        cdef double* hh = &self._hh[0] if self.n_slots else NULL
        cdef double* h = &self._h[0] if self.n_slots else NULL
        cdef double* l = &self._l[0] if self.n_slots else NULL
        cdef double* ll = &self._ll[0] if self.n_slots else NULL
        cdef double* db = &self._db[0] if self.n_slots else NULL
        cdef signed char* raw = &self._raw[0] if self.n_slots else NULL
        cdef signed char* lvl = &self._lvl[0] if self.n_slots else NULL
        cdef signed char* pend = &self._pend[0] if self.n_slots else NULL
        cdef Py_ssize_t n_map = self.n_map
        with nogil:
            for i in range(n):
                t = tag[i]
                if <size_t>t >= <size_t>n_map:  # one unsigned compare: negative or past the map
                    continue
                s = slot[t]
                if s < 0 or quality[i] >= Q_BAD:
                    continue
                v = value[i]
                if isnan(v):
                    continue
                r = _limit_raw(v, raw[s], hh[s], h[s], l[s], ll[s], db[s])
                raw[s] = r
                prev = lvl[s]
                if r == prev and pend[s] == prev:
                    continue
                if self._settle(s, r, ts[i], self._on[s], self._off[s]):
                    n_ev = self._emit(n_ev, i, prev, lvl[s], v)
        return self._events(n_ev)

    cdef bint _pass(self, Py_ssize_t b, Py_ssize_t e, const double* v) noexcept nogil:
        return pw_limit_tick(e - b, v, &self._enter_hi[b], &self._enter_lo[b], &self._gate[b])

    cdef Py_ssize_t _block(self, Py_ssize_t j, Py_ssize_t b, Py_ssize_t e, const double* v, const double* ts,
                           Py_ssize_t n_ev) noexcept nogil:
        # as the per-sample loop
        cdef Py_ssize_t a = self._first, s, i
        cdef double x
        cdef signed char r, prev
        cdef signed char* raw = &self._raw[0]
        cdef signed char* lvl = &self._lvl[0]
        cdef signed char* pend = &self._pend[0]
        for s in range(b, e):
            x = v[s - a]
            if isnan(x):
                continue
            i = j * self._width + s - a
            r = _limit_raw(x, raw[s], self._hh[s], self._h[s], self._l[s], self._ll[s], self._db[s])
            raw[s] = r
            prev = lvl[s]
            if r == prev and pend[s] == prev:
                continue
            if self._settle(s, r, ts[i], self._on[s], self._off[s]):
                n_ev = self._emit(n_ev, i, prev, lvl[s], x)
        return n_ev


def _param(x, Py_ssize_t n):
    arr = np.ascontiguousarray(x, dtype=np.float64)
    if arr.shape != (n,):
        raise ValueError(f"expected {n} per-slot values, got shape {arr.shape}")
    return arr.copy()


cdef inline bint _usable(double v, unsigned char q) noexcept nogil:
    return q < Q_BAD and not isnan(v)


# ----------------------------------------------------------------------------------------------
# roc: rate of change over a window. The rate is measured from an anchor sample to the first
# usable sample at least window_s later (and strictly later); the anchor then moves there.
# Level 1 rising faster than max_per_s, -1 falling faster; held until the next measurement.

cdef class RocKernel(_Kernel):
    cdef public object max_per_s, window_s, on_delay, off_delay, anchor_v, anchor_t, raw, level, pending, since
    cdef double[::1] _max, _win, _on, _off, _av, _at, _since
    cdef signed char[::1] _raw, _lvl, _pend

    def __init__(self, slot_of_tag, max_per_s, window_s, on_delay, off_delay):
        _Kernel.__init__(self, slot_of_tag)
        n = self.n_slots
        self.max_per_s, self.window_s = _param(max_per_s, n), _param(window_s, n)
        self.on_delay, self.off_delay = _param(on_delay, n), _param(off_delay, n)
        self.anchor_v = np.full(n, np.nan)
        self.anchor_t = np.zeros(n)
        self.raw = np.zeros(n, dtype=np.int8)
        self.level = np.zeros(n, dtype=np.int8)
        self.pending = np.zeros(n, dtype=np.int8)
        self.since = np.zeros(n)
        self._max, self._win, self._on, self._off = self.max_per_s, self.window_s, self.on_delay, self.off_delay
        self._av, self._at, self._since = self.anchor_v, self.anchor_t, self.since
        self._raw, self._lvl, self._pend = self.raw, self.level, self.pending

    def update(self, const int[::1] tag, const double[::1] value, const double[::1] ts,
               const unsigned char[::1] quality):
        cdef Py_ssize_t n = tag.shape[0], i, n_ev = 0
        cdef int t, s
        cdef double v, x, dt, rate
        cdef signed char r, prev
        self._reserve(n)
        # hot state as plain pointers (kept in registers, not reloaded from self after stores)
        cdef const int* slot = &self.slot[0] if self.n_map else NULL
        cdef double* av = &self._av[0] if self.n_slots else NULL
        cdef double* at = &self._at[0] if self.n_slots else NULL
        cdef double* win = &self._win[0] if self.n_slots else NULL
        cdef double* mx = &self._max[0] if self.n_slots else NULL
        cdef signed char* raw = &self._raw[0] if self.n_slots else NULL
        cdef signed char* lvl = &self._lvl[0] if self.n_slots else NULL
        with nogil:
            for i in range(n):
                t = tag[i]
                if <size_t>t >= <size_t>self.n_map:
                    continue
                s = slot[t]
                if s < 0:
                    continue
                v = value[i]
                if not _usable(v, quality[i]):
                    continue
                x = ts[i]
                if isnan(av[s]):
                    av[s] = v
                    at[s] = x
                    continue
                dt = x - at[s]
                if dt <= 0.0 or dt < win[s]:
                    r = raw[s]
                    rate = NAN
                else:
                    rate = (v - av[s]) / dt
                    r = 1 if rate > mx[s] else (-1 if rate < -mx[s] else 0)
                    raw[s] = r
                    av[s] = v
                    at[s] = x
                prev = lvl[s]
                if r == prev and self._pend[s] == prev:
                    continue
                if _debounce(r, x, &lvl[s], &self._pend[s], &self._since[s], self._on[s], self._off[s]):
                    n_ev = self._emit(n_ev, i, prev, lvl[s], rate)
        return self._events(n_ev)


# ----------------------------------------------------------------------------------------------
# Warm-up shared by the control charts: Welford's running mean and variance over the first
# ``warmup`` usable samples, unless mean and sigma were given. ``count >= warmup`` means ready.

cdef inline double _sigma(double m2, long long n, double min_sigma) noexcept nogil:
    cdef double s = sqrt(m2 / (n - 1)) if n > 1 else 0.0
    return s if s > min_sigma else min_sigma


cdef inline double _inverse(double sigma) noexcept nogil:
    # A warm-up on a constant signal leaves sigma 0: any later move is then infinitely many
    # sigmas away, which DBL_MAX expresses without 0 * inf = NaN for a sample at the mean.
    return 1.0 / sigma if sigma > 0.0 else DBL_MAX


cdef inline void _welford(double v, long long* n, double* mean, double* m2) noexcept nogil:
    cdef double d
    n[0] += 1
    d = v - mean[0]
    mean[0] += d / n[0]
    m2[0] += d * (v - mean[0])


# ewma: z = lambda*x + (1-lambda)*z, starting at the mean; alarm while z is outside
# mean +- L*sigma*sqrt(lambda/(2-lambda)) (the asymptotic EWMA control limits).

cdef class EwmaKernel(_TickKernel):
    cdef public object lam, L, min_sigma, warmup, on_delay, off_delay
    cdef public object count, mean, m2, z, ucl, lcl
    cdef const double[::1] _lam
    cdef double[::1] _L, _minsig, _on, _off, _mean, _m2, _z, _ucl, _lcl
    cdef long long[::1] _warm, _count
    # The whole-tick pass's skip test: slot s's raw level equals its gate while z lies strictly
    # inside (qlo, qhi), kept by _band from the gate and the control limits.
    cdef double[::1] _qlo, _qhi
    cdef readonly bint one_lambda           # every slot has lambda _lam1 (lam is read-only)
    cdef double _lam1

    def __init__(self, slot_of_tag, lam, L, min_sigma, warmup, on_delay, off_delay, mean, sigma, fast=True):
        """``mean``/``sigma`` NaN where they are to be estimated during warm-up."""
        _TickKernel.__init__(self, slot_of_tag, fast)
        n = self.n_slots
        self.lam, self.L, self.min_sigma = _param(lam, n), _param(L, n), _param(min_sigma, n)
        self.warmup = np.ascontiguousarray(warmup, dtype=np.int64).copy()
        self.on_delay, self.off_delay = _param(on_delay, n), _param(off_delay, n)
        self.count = np.zeros(n, dtype=np.int64)
        self.mean = np.zeros(n)
        self.m2 = np.zeros(n)
        self.z = np.zeros(n)
        self.ucl = np.full(n, np.inf)
        self.lcl = np.full(n, -np.inf)
        self._qlo, self._qhi = np.zeros(n), np.zeros(n)
        self.lam.flags.writeable = False
        self.one_lambda = n > 0 and bool((self.lam == self.lam[0]).all())
        self._lam1 = float(self.lam[0]) if n else 0.0
        self._lam, self._L, self._minsig = self.lam, self.L, self.min_sigma
        self._warm, self._count, self._on, self._off = self.warmup, self.count, self.on_delay, self.off_delay
        self._mean, self._m2, self._z, self._ucl, self._lcl = self.mean, self.m2, self.z, self.ucl, self.lcl
        given_mean, given_sigma = _param(mean, n), _param(sigma, n)
        for s in range(n):
            if not isnan(given_mean[s]):
                self._mean[s] = given_mean[s]
                self._count[s] = self._warm[s]
                self._ready(s, given_sigma[s] if given_sigma[s] > self._minsig[s] else self._minsig[s])
        for s in range(n):
            self._band(s)
        self.n_warming = np.count_nonzero(self.count < self.warmup)

    cdef inline void _ready(self, Py_ssize_t s, double sigma) noexcept nogil:
        cdef double w = self._L[s] * sigma * sqrt(self._lam[s] / (2.0 - self._lam[s]))
        self._z[s] = self._mean[s]
        self._ucl[s] = self._mean[s] + w
        self._lcl[s] = self._mean[s] - w
        self._band(s)

    cdef void _gate_changed(self, Py_ssize_t s) noexcept nogil:
        self._band(s)

    cdef inline void _band(self, Py_ssize_t s) noexcept nogil:
        # raw level r = 1 if z > ucl, -1 if z < lcl, else 0; where r equals the gate z may stay:
        #   gate 0: lcl <= z <= ucl, i.e. nextafter(lcl, -inf) < z < nextafter(ucl, +inf)
        #   gate 1: ucl < z;  gate -1: z < lcl;  pending (NaN): nowhere.
        # An infinite z or NaN limits fall outside, which only sends the slot through the
        # per-sample logic: the band may be narrower than the truth, never wider.
        cdef double g = self._gate[s]
        if g == 0.0:
            self._qlo[s] = nextafter(self._lcl[s], -INFINITY)
            self._qhi[s] = nextafter(self._ucl[s], INFINITY)
        elif g == 1.0:
            self._qlo[s] = self._ucl[s]
            self._qhi[s] = INFINITY
        elif g == -1.0:
            self._qlo[s] = -INFINITY
            self._qhi[s] = self._lcl[s]
        else:
            self._qlo[s] = INFINITY
            self._qhi[s] = -INFINITY

    def update(self, tags, const double[::1] value, const double[::1] ts,
               const unsigned char[::1] quality):
        cdef const int[::1] tag = tags
        cdef Py_ssize_t n = tag.shape[0], i, n_ev = 0
        cdef int t, s
        cdef double v, z
        cdef signed char r, prev
        self._reserve(n)
        if self._by_ticks(tags, n, &tag[0] if n else NULL, &value[0] if n else NULL, &ts[0] if n else NULL,
                          &quality[0] if n else NULL, &n_ev):
            return self._events(n_ev)
        # hot state as plain pointers: the C compiler keeps them in registers instead of
        # reloading each memoryview's data pointer from self after every store
        cdef const int* slot = &self.slot[0] if self.n_map else NULL
        cdef long long* count = &self._count[0] if self.n_slots else NULL
        cdef long long* warm = &self._warm[0] if self.n_slots else NULL
        cdef const double* lam = &self._lam[0] if self.n_slots else NULL
        cdef double* zs = &self._z[0] if self.n_slots else NULL
        cdef double* ucl = &self._ucl[0] if self.n_slots else NULL
        cdef double* lcl = &self._lcl[0] if self.n_slots else NULL
        cdef signed char* lvl = &self._lvl[0] if self.n_slots else NULL
        cdef signed char* pend = &self._pend[0] if self.n_slots else NULL
        cdef Py_ssize_t n_map = self.n_map
        with nogil:
            for i in range(n):
                t = tag[i]
                if <size_t>t >= <size_t>n_map:
                    continue
                s = slot[t]
                if s < 0:
                    continue
                v = value[i]
                if not _usable(v, quality[i]):
                    continue
                if count[s] < warm[s]:
                    _welford(v, &count[s], &self._mean[s], &self._m2[s])
                    if count[s] == warm[s]:
                        self._ready(s, _sigma(self._m2[s], count[s], self._minsig[s]))
                        self.n_warming -= 1
                    continue
                z = lam[s] * v + (1.0 - lam[s]) * zs[s]
                zs[s] = z
                r = 1 if z > ucl[s] else (-1 if z < lcl[s] else 0)
                prev = lvl[s]
                if r == prev and pend[s] == prev:
                    continue
                if self._settle(s, r, ts[i], self._on[s], self._off[s]):
                    n_ev = self._emit(n_ev, i, prev, lvl[s], z)
        return self._events(n_ev)

    cdef bint _pass(self, Py_ssize_t b, Py_ssize_t e, const double* v) noexcept nogil:
        if self.one_lambda:
            return pw_ewma_tick1(e - b, v, self._lam1, &self._z[b], &self._qlo[b], &self._qhi[b])
        return pw_ewma_tick(e - b, v, &self._lam[b], &self._z[b], &self._qlo[b], &self._qhi[b])

    cdef Py_ssize_t _block(self, Py_ssize_t j, Py_ssize_t b, Py_ssize_t e, const double* v, const double* ts,
                           Py_ssize_t n_ev) noexcept nogil:
        # as the per-sample loop, z already updated
        cdef Py_ssize_t a = self._first, s, i
        cdef double z
        cdef signed char r, prev
        cdef signed char* lvl = &self._lvl[0]
        cdef signed char* pend = &self._pend[0]
        for s in range(b, e):
            if isnan(v[s - a]):
                continue
            i = j * self._width + s - a
            z = self._z[s]
            r = 1 if z > self._ucl[s] else (-1 if z < self._lcl[s] else 0)
            prev = lvl[s]
            if r == prev and pend[s] == prev:
                continue
            if self._settle(s, r, ts[i], self._on[s], self._off[s]):
                n_ev = self._emit(n_ev, i, prev, lvl[s], z)
        return n_ev


# cusum: two-sided Page CUSUM on standardised samples, S+ = max(0, S+ + x - k),
# S- = max(0, S- - x - k); crossing h raises (1 up, -1 down) and restarts both sums, so a
# persistent shift keeps re-crossing and the off-delay holds the alarm between crossings.

cdef class CusumKernel(_TickKernel):
    cdef public object k, h, min_sigma, warmup, off_delay
    cdef public object count, mean, m2, inv_sigma, sp, sn
    cdef double[::1] _k, _h, _minsig, _off, _mean, _m2, _isig, _sp, _sn
    cdef long long[::1] _warm, _count

    def __init__(self, slot_of_tag, k, h, min_sigma, warmup, off_delay, mean, sigma, fast=True):
        _TickKernel.__init__(self, slot_of_tag, fast)
        n = self.n_slots
        self.k, self.h, self.min_sigma = _param(k, n), _param(h, n), _param(min_sigma, n)
        self.warmup = np.ascontiguousarray(warmup, dtype=np.int64).copy()
        self.off_delay = _param(off_delay, n)
        self.count = np.zeros(n, dtype=np.int64)
        self.mean = np.zeros(n)
        self.m2 = np.zeros(n)
        self.inv_sigma = np.zeros(n)
        self.sp = np.zeros(n)
        self.sn = np.zeros(n)
        self._k, self._h, self._minsig, self._off = self.k, self.h, self.min_sigma, self.off_delay
        self._warm, self._count = self.warmup, self.count
        self._mean, self._m2, self._isig, self._sp, self._sn = self.mean, self.m2, self.inv_sigma, self.sp, self.sn
        given_mean, given_sigma = _param(mean, n), _param(sigma, n)
        for s in range(n):
            if not isnan(given_mean[s]):
                self._mean[s] = given_mean[s]
                self._count[s] = self._warm[s]
                self._isig[s] = _inverse(given_sigma[s] if given_sigma[s] > self._minsig[s] else self._minsig[s])
        self.n_warming = np.count_nonzero(self.count < self.warmup)

    def update(self, tags, const double[::1] value, const double[::1] ts,
               const unsigned char[::1] quality):
        cdef const int[::1] tag = tags
        cdef Py_ssize_t n = tag.shape[0], i, n_ev = 0
        cdef int t, s
        cdef double v, x, sp, sn, stat
        cdef signed char r, prev
        self._reserve(n)
        if self._by_ticks(tags, n, &tag[0] if n else NULL, &value[0] if n else NULL, &ts[0] if n else NULL,
                          &quality[0] if n else NULL, &n_ev):
            return self._events(n_ev)
        # hot state as plain pointers (kept in registers, not reloaded from self after stores)
        cdef const int* slot = &self.slot[0] if self.n_map else NULL
        cdef long long* count = &self._count[0] if self.n_slots else NULL
        cdef long long* warm = &self._warm[0] if self.n_slots else NULL
        cdef double* mean = &self._mean[0] if self.n_slots else NULL
        cdef double* isig = &self._isig[0] if self.n_slots else NULL
        cdef double* k = &self._k[0] if self.n_slots else NULL
        cdef double* hs = &self._h[0] if self.n_slots else NULL
        cdef double* sps = &self._sp[0] if self.n_slots else NULL
        cdef double* sns = &self._sn[0] if self.n_slots else NULL
        cdef signed char* lvl = &self._lvl[0] if self.n_slots else NULL
        cdef signed char* pend = &self._pend[0] if self.n_slots else NULL
        cdef Py_ssize_t n_map = self.n_map
        with nogil:
            for i in range(n):
                t = tag[i]
                if <size_t>t >= <size_t>n_map:
                    continue
                s = slot[t]
                if s < 0:
                    continue
                v = value[i]
                if not _usable(v, quality[i]):
                    continue
                if count[s] < warm[s]:
                    _welford(v, &count[s], &mean[s], &self._m2[s])
                    if count[s] == warm[s]:
                        isig[s] = _inverse(_sigma(self._m2[s], count[s], self._minsig[s]))
                        self.n_warming -= 1
                    continue
                x = (v - mean[s]) * isig[s]
                sp = sps[s] + x - k[s]
                sn = sns[s] - x - k[s]
                sp = _max0(sp)
                sn = _max0(sn)
                r = 0
                stat = 0.0
                if sp > hs[s]:
                    r = 1
                    stat = sp
                elif sn > hs[s]:
                    r = -1
                    stat = -sn
                if r != 0:
                    sp = 0.0
                    sn = 0.0
                sps[s] = sp
                sns[s] = sn
                prev = lvl[s]
                if r == prev and pend[s] == prev:
                    continue
                if self._settle(s, r, ts[i], 0.0, self._off[s]):
                    n_ev = self._emit(n_ev, i, prev, lvl[s], stat)
        return self._events(n_ev)

    cdef bint _pass(self, Py_ssize_t b, Py_ssize_t e, const double* v) noexcept nogil:
        return pw_cusum_tick(e - b, v, &self._mean[b], &self._isig[b], &self._k[b], &self._h[b], &self._sp[b],
                             &self._sn[b], &self._gate[b])

    cdef Py_ssize_t _block(self, Py_ssize_t j, Py_ssize_t b, Py_ssize_t e, const double* v, const double* ts,
                           Py_ssize_t n_ev) noexcept nogil:
        # as the per-sample loop, the sums already updated
        cdef Py_ssize_t a = self._first, s, i
        cdef double sp, sn, stat
        cdef signed char r, prev
        cdef signed char* lvl = &self._lvl[0]
        cdef signed char* pend = &self._pend[0]
        for s in range(b, e):
            if isnan(v[s - a]):
                continue
            i = j * self._width + s - a
            sp = self._sp[s]
            sn = self._sn[s]
            r = 0
            stat = 0.0
            if sp > self._h[s]:
                r = 1
                stat = sp
            elif sn > self._h[s]:
                r = -1
                stat = -sn
            if r != 0:
                self._sp[s] = 0.0
                self._sn[s] = 0.0
            prev = lvl[s]
            if r == prev and pend[s] == prev:
                continue
            if self._settle(s, r, ts[i], 0.0, self._off[s]):
                n_ev = self._emit(n_ev, i, prev, lvl[s], stat)
        return n_ev


# ----------------------------------------------------------------------------------------------
# robust (Hampel): each sample is judged against the median and MAD of the previous ``window``
# usable samples of its tag: z = (x - median) / (1.4826 * MAD), alarm while |z| > threshold.
# The window is kept both as a ring (for eviction order) and sorted (median in O(1), MAD by a
# two-pointer walk over the deviations on either side of the median), so an update is O(window).

cdef inline Py_ssize_t _bisect(double* a, Py_ssize_t n, double x) noexcept nogil:
    """First position whose value is >= x (values are never NaN)."""
    cdef Py_ssize_t lo = 0, hi = n, mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if a[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo


cdef inline double _kth_dev(double* a, Py_ssize_t n, double m, Py_ssize_t k) noexcept nogil:
    """The k-th smallest (0-based) of |a[i] - m| over sorted a, m its median."""
    cdef Py_ssize_t left = _bisect(a, n, m) - 1, right = left + 1, j
    cdef double d = 0.0, dl, dr
    for j in range(k + 1):
        dl = m - a[left] if left >= 0 else INFINITY
        dr = a[right] - m if right < n else INFINITY
        if dl <= dr:
            d = dl
            left -= 1
        else:
            d = dr
            right += 1
    return d


cdef class RobustKernel(_Kernel):
    cdef public object window, threshold, min_mad, on_delay, off_delay
    cdef public object ring, sorted, count, pos, level, pending, since
    cdef double[::1] _thr, _minmad, _on, _off, _since
    cdef double[:, ::1] _ring, _sorted
    cdef long long[::1] _win, _count, _pos
    cdef signed char[::1] _lvl, _pend

    def __init__(self, slot_of_tag, window, threshold, min_mad, on_delay, off_delay):
        _Kernel.__init__(self, slot_of_tag)
        n = self.n_slots
        self.window = np.ascontiguousarray(window, dtype=np.int64).copy()
        width = int(self.window.max()) if n else 1
        self.threshold, self.min_mad = _param(threshold, n), _param(min_mad, n)
        self.on_delay, self.off_delay = _param(on_delay, n), _param(off_delay, n)
        self.ring = np.zeros((n, width))
        self.sorted = np.zeros((n, width))
        self.count = np.zeros(n, dtype=np.int64)
        self.pos = np.zeros(n, dtype=np.int64)
        self.level = np.zeros(n, dtype=np.int8)
        self.pending = np.zeros(n, dtype=np.int8)
        self.since = np.zeros(n)
        self._win, self._thr, self._minmad = self.window, self.threshold, self.min_mad
        self._on, self._off, self._ring, self._sorted = self.on_delay, self.off_delay, self.ring, self.sorted
        self._count, self._pos = self.count, self.pos
        self._lvl, self._pend, self._since = self.level, self.pending, self.since

    def update(self, const int[::1] tag, const double[::1] value, const double[::1] ts,
               const unsigned char[::1] quality):
        cdef Py_ssize_t n = tag.shape[0], i, n_ev = 0, w, c, j, half
        cdef int t, s
        cdef double v, med, mad, scale, z, old
        cdef double* srt
        cdef signed char r, prev
        self._reserve(n)
        with nogil:
            for i in range(n):
                t = tag[i]
                if <size_t>t >= <size_t>self.n_map:
                    continue
                s = self.slot[t]
                if s < 0:
                    continue
                v = value[i]
                if not _usable(v, quality[i]):
                    continue
                w = self._win[s]
                c = self._count[s]
                srt = &self._sorted[s, 0]
                z = 0.0
                r = 0
                if c == w:
                    half = w >> 1
                    med = srt[half] if w & 1 else 0.5 * (srt[half - 1] + srt[half])
                    if w & 1:
                        mad = _kth_dev(srt, w, med, half)
                    else:
                        mad = 0.5 * (_kth_dev(srt, w, med, half - 1) + _kth_dev(srt, w, med, half))
                    scale = 1.4826 * mad
                    if scale < self._minmad[s]:
                        scale = self._minmad[s]
                    if scale > 0.0:
                        z = (v - med) / scale
                    elif v != med:
                        z = INFINITY if v > med else -INFINITY
                    r = 1 if z > self._thr[s] else (-1 if z < -self._thr[s] else 0)
                    # evict the oldest sample from the sorted copy
                    old = self._ring[s, self._pos[s]]
                    j = _bisect(srt, c, old)
                    memmove(&srt[j], &srt[j + 1], (c - j - 1) * sizeof(double))
                    c -= 1
                j = _bisect(srt, c, v)
                memmove(&srt[j + 1], &srt[j], (c - j) * sizeof(double))
                srt[j] = v
                self._count[s] = c + 1
                self._ring[s, self._pos[s]] = v
                self._pos[s] = self._pos[s] + 1 if self._pos[s] + 1 < w else 0
                prev = self._lvl[s]
                if _debounce(r, ts[i], &self._lvl[s], &self._pend[s], &self._since[s], self._on[s], self._off[s]):
                    n_ev = self._emit(n_ev, i, prev, self._lvl[s], z)
        return self._events(n_ev)


# ----------------------------------------------------------------------------------------------
# flatline: active (1) once the value has stayed within eps of the value that started the
# current flat stretch for duration_s; any move beyond eps starts a new stretch and clears.

cdef class FlatlineKernel(_Kernel):
    cdef public object eps, duration, on_delay, off_delay, ref_v, ref_t, level, pending, since
    cdef double[::1] _eps, _dur, _on, _off, _rv, _rt, _since
    cdef signed char[::1] _lvl, _pend

    def __init__(self, slot_of_tag, eps, duration, on_delay, off_delay):
        _Kernel.__init__(self, slot_of_tag)
        n = self.n_slots
        self.eps, self.duration = _param(eps, n), _param(duration, n)
        self.on_delay, self.off_delay = _param(on_delay, n), _param(off_delay, n)
        self.ref_v = np.full(n, np.nan)
        self.ref_t = np.zeros(n)
        self.level = np.zeros(n, dtype=np.int8)
        self.pending = np.zeros(n, dtype=np.int8)
        self.since = np.zeros(n)
        self._eps, self._dur, self._on, self._off = self.eps, self.duration, self.on_delay, self.off_delay
        self._rv, self._rt = self.ref_v, self.ref_t
        self._lvl, self._pend, self._since = self.level, self.pending, self.since

    def update(self, const int[::1] tag, const double[::1] value, const double[::1] ts,
               const unsigned char[::1] quality):
        cdef Py_ssize_t n = tag.shape[0], i, n_ev = 0
        cdef int t, s
        cdef double v, x
        cdef signed char r, prev
        self._reserve(n)
        # hot state as plain pointers (kept in registers, not reloaded from self after stores)
        cdef const int* slot = &self.slot[0] if self.n_map else NULL
        cdef double* rv = &self._rv[0] if self.n_slots else NULL
        cdef double* rt = &self._rt[0] if self.n_slots else NULL
        cdef double* eps = &self._eps[0] if self.n_slots else NULL
        cdef double* dur = &self._dur[0] if self.n_slots else NULL
        cdef signed char* lvl = &self._lvl[0] if self.n_slots else NULL
        with nogil:
            for i in range(n):
                t = tag[i]
                if <size_t>t >= <size_t>self.n_map:
                    continue
                s = slot[t]
                if s < 0:
                    continue
                v = value[i]
                if not _usable(v, quality[i]):
                    continue
                x = ts[i]
                if isnan(rv[s]) or fabs(v - rv[s]) > eps[s]:
                    rv[s] = v
                    rt[s] = x
                    r = 0
                else:
                    r = 1 if x - rt[s] >= dur[s] else 0
                prev = lvl[s]
                if r == prev and self._pend[s] == prev:
                    continue
                if _debounce(r, x, &lvl[s], &self._pend[s], &self._since[s], self._on[s], self._off[s]):
                    n_ev = self._emit(n_ev, i, prev, lvl[s], x - rt[s])
        return self._events(n_ev)


# ----------------------------------------------------------------------------------------------
# sensor: the sample itself is implausible. Level 1 above the physical range, -1 below it,
# 2 a BAD-quality (or NaN) sample inside it. COMM_FAIL samples are the agent's comm alarm and
# are skipped here.

cdef enum:
    Q_COMM_FAIL = 3


cdef class SensorKernel(_Kernel):
    cdef public object lo, hi, on_delay, off_delay, level, pending, since
    cdef double[::1] _lo, _hi, _on, _off, _since
    cdef signed char[::1] _lvl, _pend

    def __init__(self, slot_of_tag, lo, hi, on_delay, off_delay):
        _Kernel.__init__(self, slot_of_tag)
        n = self.n_slots
        self.lo, self.hi = _param(lo, n), _param(hi, n)
        self.on_delay, self.off_delay = _param(on_delay, n), _param(off_delay, n)
        self.level = np.zeros(n, dtype=np.int8)
        self.pending = np.zeros(n, dtype=np.int8)
        self.since = np.zeros(n)
        self._lo, self._hi, self._on, self._off = self.lo, self.hi, self.on_delay, self.off_delay
        self._lvl, self._pend, self._since = self.level, self.pending, self.since

    def update(self, const int[::1] tag, const double[::1] value, const double[::1] ts,
               const unsigned char[::1] quality):
        cdef Py_ssize_t n = tag.shape[0], i, n_ev = 0
        cdef int t, s
        cdef double v
        cdef unsigned char q
        cdef signed char r, prev
        self._reserve(n)
        with nogil:
            for i in range(n):
                t = tag[i]
                if <size_t>t >= <size_t>self.n_map:
                    continue
                s = self.slot[t]
                q = quality[i]
                if s < 0 or q >= Q_COMM_FAIL:
                    continue
                v = value[i]
                if isnan(v):
                    r = 2
                elif v > self._hi[s]:
                    r = 1
                elif v < self._lo[s]:
                    r = -1
                elif q == Q_BAD:
                    r = 2
                else:
                    r = 0
                prev = self._lvl[s]
                if _debounce(r, ts[i], &self._lvl[s], &self._pend[s], &self._since[s], self._on[s], self._off[s]):
                    n_ev = self._emit(n_ev, i, prev, self._lvl[s], v)
        return self._events(n_ev)

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

This file holds what every kernel shares: the kernel base classes, the whole-tick path, and
the two loops (per sample, and per block of a whole tick) that run a family's step. The
families follow by group: thresholds (limit, roc, sensor), control charts (ewma, cusum) and
windows (robust, flatline).
"""

import numpy as np

include "_build.pxi"

from _common cimport *

from libc.math cimport NAN


def _param(x, Py_ssize_t n):
    arr = np.ascontiguousarray(x, dtype=np.float64)
    if arr.shape != (n,):
        raise ValueError(f"expected {n} per-slot values, got shape {arr.shape}")
    return arr.copy()


# ----------------------------------------------------------------------------------------------
# The loops. A family's step judges one usable sample of slot s: it updates the slot's
# statistic (unless ``advance`` is False: the whole-tick pass already did) and gives its raw
# level and the event detail, or False when the sample leaves the level alone (unusable, or
# still in warm-up). Specialized per family at compile time (see Step in ext/_common.pxd).

cdef inline bint _step(Step* f, Py_ssize_t s, double v, unsigned char q, double t, bint advance,
                       signed char* r, double* x) noexcept nogil:
    if Step is LimitStep:
        return _limit_step(f, s, v, q, r, x)
    elif Step is RocStep:
        return _roc_step(f, s, v, q, t, r, x)
    elif Step is SensorStep:
        return _sensor_step(f, s, v, q, r, x)
    elif Step is EwmaStep:
        return _ewma_step(f, s, v, q, advance, r, x)
    elif Step is CusumStep:
        return _cusum_step(f, s, v, q, advance, r, x)
    elif Step is RobustStep:
        return _robust_step(f, s, v, q, r, x)
    else:
        return _flatline_step(f, s, v, q, t, r, x)


cdef inline Py_ssize_t _change(Step* f, Debounce* d, Events* ev, Py_ssize_t n_ev, Py_ssize_t i, Py_ssize_t s,
                               signed char r, double t, double x) noexcept nogil:
    """Debounce raw level r of slot s at sample i (time t), which differs from the slot's level
    or its pending one; returns the event count. d and ev are the kernel's own: the loops keep
    only the level and pending arrays of the debounce in registers."""
    cdef signed char prev = d.lvl[s]
    cdef bint changed = _debounce(r, t, &d.lvl[s], &d.pend[s], &d.since[s], d.on[s], d.off[s])
    if d.gate != NULL:
        d.gate[s] = d.lvl[s] if d.pend[s] == d.lvl[s] else NAN
        if Step is EwmaStep:
            _ewma_band(f, s)
    if not changed:
        return n_ev
    ev.idx[n_ev] = i
    ev.prev[n_ev] = prev
    ev.new[n_ev] = d.lvl[s]
    ev.x[n_ev] = x
    return n_ev + 1


cdef inline Py_ssize_t _each_sample(Step* family, Debounce* d, Events* ev, const int* slot, Py_ssize_t n_map,
                                    Py_ssize_t n, const int* tag, const double* value, const double* ts,
                                    const unsigned char* quality) noexcept nogil:
    """The per-sample loop: every sample of a batch in order; returns the event count."""
    cdef Step f = family[0]
    cdef signed char* lvl = d.lvl
    cdef signed char* pend = d.pend
    cdef Py_ssize_t i, n_ev = 0
    cdef int s
    cdef signed char r
    cdef double x, t
    for i in range(n):
        s = _slot(slot, n_map, tag[i])
        if s < 0:
            continue
        t = ts[i]  # read once: the step's stores to int8 state could alias it for the compiler
        if not _step(&f, s, value[i], quality[i], t, True, &r, &x):
            continue
        if likely(r == lvl[s] and pend[s] == r):  # nothing pending, nothing new
            continue
        n_ev = _change(&f, d, ev, n_ev, i, s, r, t, x)
    return n_ev


cdef inline Py_ssize_t _each_slot(Step* f, Debounce* d, Events* ev, Py_ssize_t n_ev, Run run, Py_ssize_t j,
                                  Py_ssize_t b, Py_ssize_t e, const double* v, const double* ts) noexcept nogil:
    """The per-sample logic for slots b..e-1 of tick j of a whole-tick batch after the tick's
    pass (v[s - run.first] is slot s's sample, ts the batch's times); returns the event count."""
    cdef Py_ssize_t s, i
    cdef signed char r
    cdef double x, t
    for s in range(b, e):
        i = j * run.width + s - run.first
        t = ts[i]
        if not _step(f, s, v[s - run.first], Q_GOOD, t, False, &r, &x):
            continue
        if r == d.lvl[s] and d.pend[s] == r:
            continue
        n_ev = _change(f, d, ev, n_ev, i, s, r, t, x)
    return n_ev


# ----------------------------------------------------------------------------------------------
# The kernels' Python face: slot map, event buffers, debounce state, one update per batch.

cdef class _Kernel:
    """Shared slot map, event buffers and debounce state; ``update`` judges a batch."""

    cdef public object slot_of_tag          # int32[n_tags], -1 = not watched
    cdef int[::1] slot
    cdef Py_ssize_t n_map
    cdef public Py_ssize_t n_slots
    cdef public object level, pending, since
    cdef readonly bint whole_ticks          # True: a whole-tick path, which takes plans (plan())
    # the owners of the memory the Events and Debounce structs point into
    cdef Py_ssize_t[::1] ev_idx
    cdef signed char[::1] ev_prev, ev_new, _lvl, _pend
    cdef double[::1] ev_x, _since, _on, _off
    cdef Py_ssize_t cap
    cdef Events ev
    cdef Debounce db

    def __init__(self, slot_of_tag):
        arr = np.ascontiguousarray(slot_of_tag, dtype=np.int32)
        self.slot_of_tag = arr
        self.slot = arr
        self.n_map = arr.shape[0]
        self.n_slots = int(arr.max()) + 1 if arr.shape[0] and arr.max() >= 0 else 0
        n = self.n_slots
        self.level = self._lvl = np.zeros(n, dtype=np.int8)
        self.pending = self._pend = np.zeros(n, dtype=np.int8)
        self.since = self._since = np.zeros(n)
        self._reserve(256)

    cdef _delays(self, on_delay, off_delay):
        """Set the debounce's delays (per-slot arrays the kernel keeps) and point db at its state."""
        self._on, self._off = on_delay, off_delay
        self.db.lvl = _i8(self._lvl)
        self.db.pend = _i8(self._pend)
        self.db.since = _f8(self._since)
        self.db.on = _f8(self._on)
        self.db.off = _f8(self._off)
        self.db.gate = NULL

    cdef _reserve(self, Py_ssize_t n):
        if n <= self.cap:
            return
        self.cap = max(n, 2 * self.cap)
        self.ev_idx = np.empty(self.cap, dtype=np.intp)
        self.ev_prev = np.empty(self.cap, dtype=np.int8)
        self.ev_new = np.empty(self.cap, dtype=np.int8)
        self.ev_x = np.empty(self.cap, dtype=np.float64)
        self.ev.idx, self.ev.prev, self.ev.new = &self.ev_idx[0], &self.ev_prev[0], &self.ev_new[0]
        self.ev.x = &self.ev_x[0]

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

    def plan(self, const int[::1] tags):
        """The whole-tick plan of a tag array (see _TickKernel.plan); None: this kernel has no
        whole-tick path."""
        return None

    def update(self, const int[::1] tag, const double[::1] value, const double[::1] ts,
               const unsigned char[::1] quality, TickPlan plan=None):
        """Judge a batch: events as (sample index, previous level, new level, detail) arrays,
        or None. ``plan``: this kernel's ``plan(tag)`` of this very tag array, for a caller
        that knows the array has not changed since (else the kernel checks the tags itself)."""
        cdef Py_ssize_t n = tag.shape[0], n_ev
        if plan is not None and (plan.kernel is not self or plan.n != n):
            raise ValueError("the plan was made by another kernel or for another batch")
        self._reserve(n)
        if n == 0:
            return None
        n_ev = self._by_ticks(plan, n, &tag[0], &value[0], &ts[0], &quality[0])
        if n_ev < 0:
            with nogil:
                n_ev = self._samples(n, &tag[0], &value[0], &ts[0], &quality[0])
        return self._events(n_ev)

    cdef Py_ssize_t _by_ticks(self, TickPlan plan, Py_ssize_t n, const int* tag, const double* value,
                              const double* ts, const unsigned char* quality) noexcept:
        """Judge the batch by the whole-tick path, returning the event count, or -1 when it
        takes the per-sample loop."""
        return -1

    cdef Py_ssize_t _samples(self, Py_ssize_t n, const int* tag, const double* value, const double* ts,
                             const unsigned char* quality) noexcept nogil:
        """The family's per-sample loop (_each_sample over its step); returns the event count."""
        return 0


cdef inline signed char* _i8(signed char[::1] a) noexcept:
    return &a[0] if a.shape[0] else NULL


cdef inline double* _f8(double[::1] a) noexcept:
    return &a[0] if a.shape[0] else NULL


cdef inline long long* _i64(long long[::1] a) noexcept:
    return &a[0] if a.shape[0] else NULL


# ----------------------------------------------------------------------------------------------
# Whole-tick path (limit, ewma, cusum). A device read delivers a tick: each of its tags once, in
# tag order. Slots follow tag order, so when the family watches every tag of the read those
# tags are a run of consecutive slots (all of them when the family watches exactly the batch's
# tags). When a batch is k ticks of one such run, none of them BAD or COMM_FAIL, and (control
# charts) every slot is past its warm-up, a tick's statistic update is an elementwise pass over
# the run's slice of the slot arrays (ext/_simd.h, vectorized), in blocks of TICK_BLOCK slots.
# The family's step (raw level, CUSUM restart) and the debounce then run only over the blocks
# where the pass found a slot whose level may change, NaN samples skipped there exactly as in
# the per-sample loop. Any other batch takes the per-sample loop. Both give the same state and
# the same events in the same order: each slot's state depends on its own samples only, and the
# blocks go in slot order.

cdef class TickPlan:
    """Where a tag array puts whole ticks for one kernel: a pure function of the array and the
    kernel's slot map, so a caller that knows an array cannot change may keep its plan and
    pass it with every batch of that array instead of having the tags checked each time."""

    cdef readonly object kernel             # the kernel whose slot map the plan follows
    cdef readonly Py_ssize_t n              # samples of the batch
    cdef Run run

    @property
    def ticks(self):
        """Whole ticks in the batch; 0 when it is not whole ticks of a run of slots."""
        return self.run.ticks


cdef class _TickKernel(_Kernel):
    """The whole-tick path, for kernels whose step has a vectorized pass."""

    cdef readonly object tag_of_slot        # int32[n_slots]: a tag of each slot (-1 if none)
    cdef readonly Py_ssize_t fast_ticks     # ticks judged by the whole-tick path so far
    cdef public bint fast                   # False: always the per-sample loop (for comparison)
    cdef int[::1] _tag_of_slot
    # The level as float64, NaN while a transition is pending (Debounce.gate). The state
    # arrays are for reading: the gate follows them only through _change.
    cdef double[::1] _gate
    cdef bint _tiled                        # every slot has a tag, so whole ticks exist
    cdef Py_ssize_t n_warming               # slots still in warm-up (control charts)

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
        self.whole_ticks = True
        self._gate = np.zeros(n)

    cdef _delays(self, on_delay, off_delay):
        _Kernel._delays(self, on_delay, off_delay)
        self.db.gate = _f8(self._gate)

    def plan(self, const int[::1] tags):
        """The whole-tick plan of a tag array (a TickPlan for ``update``): the run of slots
        its ticks cover, or none. It depends only on the array's contents."""
        cdef TickPlan plan = TickPlan.__new__(TickPlan)
        plan.kernel = self
        plan.n = tags.shape[0]
        if plan.n:
            with nogil:
                plan.run = self._run(plan.n, &tags[0])
        return plan

    cdef Run _run(self, Py_ssize_t n, const int* tag) noexcept nogil:
        """The batch of n tags (n > 0) as whole ticks of a run of slots (0 ticks when it is not)."""
        cdef Run run
        cdef Py_ssize_t a, m, room
        cdef int t0 = tag[0]
        run.ticks = run.first = run.width = 0
        a = _slot(&self.slot[0], self.n_map, t0)
        if a < 0:
            return run
        room = self.n_slots - a
        # ticks of every slot, the common case, need no search for the tick's end
        if a == 0 and n % room == 0 and pw_whole_ticks(n, tag, room, &self._tag_of_slot[0]):
            run.ticks, run.first, run.width = n // room, 0, room
            return run
        # a tick ends before the first tag comes again, and cannot run past the last slot
        m = 1
        while m < n and m < room and tag[m] != t0:
            m += 1
        if n % m == 0 and pw_whole_ticks(n, tag, m, &self._tag_of_slot[a]):
            run.ticks, run.first, run.width = n // m, a, m
        return run

    cdef Py_ssize_t _by_ticks(self, TickPlan plan, Py_ssize_t n, const int* tag, const double* value,
                              const double* ts, const unsigned char* quality) noexcept:
        cdef Run run
        if not self.fast or not self._tiled or self.n_warming:
            return -1
        if pw_max_quality(n, quality) >= Q_BAD:
            return -1
        if plan is not None:
            run = plan.run
        else:
            with nogil:
                run = self._run(n, tag)
        if run.ticks == 0:
            return -1
        with nogil:
            return self._whole(run, value, ts)

    cdef Py_ssize_t _whole(self, Run run, const double* value, const double* ts) noexcept nogil:
        """Judge the ticks of a batch: per tick and block of slots, the kernel's vectorized
        _pass, then its _block where the pass flags work; returns the number of events."""
        cdef Py_ssize_t a = run.first, m = run.width, j, b, e, n_ev = 0
        cdef const double* v
        for j in range(run.ticks):
            v = value + j * m  # v[s - a] is the sample of slot s (a <= s < a + m)
            e = a
            while e < a + m:
                b = e
                e = b + TICK_BLOCK if b + TICK_BLOCK < a + m else a + m
                if self._pass(b, e, v + (b - a)):
                    n_ev = self._block(run, j, b, e, v, ts, n_ev)
        self.fast_ticks += run.ticks
        return n_ev

    cdef bint _pass(self, Py_ssize_t b, Py_ssize_t e, const double* v) noexcept nogil:
        """The kernel's vectorized pass over slots b..e-1 (v[0] is slot b's sample): updates
        their statistics, nonzero when some slot may change level."""
        return True

    cdef Py_ssize_t _block(self, Run run, Py_ssize_t j, Py_ssize_t b, Py_ssize_t e, const double* v,
                           const double* ts, Py_ssize_t n_ev) noexcept nogil:
        """_each_slot over the family's step for slots b..e-1 of tick j."""
        return n_ev


include "_thresholds.pxi"
include "_charts.pxi"
include "_windows.pxi"

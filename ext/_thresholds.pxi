# Threshold families, included by ext/_kernels.pyx: limit, roc and sensor. Each judges a sample
# against fixed per-tag bounds; only limit has a whole-tick path.

from libc.math cimport isnan, NAN


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


cdef inline bint _limit_step(LimitStep* f, Py_ssize_t s, double v, unsigned char q, signed char* r,
                             double* x) noexcept nogil:
    # no statistic: the whole-tick pass only tells which slots may change
    if not _usable(v, q):
        return False
    r[0] = _limit_raw(v, f.raw[s], f.hh[s], f.h[s], f.l[s], f.ll[s], f.db[s])
    f.raw[s] = r[0]
    x[0] = v
    return True


cdef class LimitKernel(_TickKernel):
    """State of the limit family; one slot per tag that has an ``alarms`` table."""

    cdef public object hh, h, l, ll, deadband, on_delay, off_delay, raw
    cdef double[::1] _hh, _h, _l, _ll, _db, _enter_hi, _enter_lo
    cdef signed char[::1] _raw
    cdef LimitStep st

    def __init__(self, slot_of_tag, hh, h, l, ll, deadband, on_delay, off_delay, fast=True):
        _TickKernel.__init__(self, slot_of_tag, fast)
        n = self.n_slots
        self.hh = self._hh = _param(hh, n)
        self.h = self._h = _param(h, n)
        self.l = self._l = _param(l, n)
        self.ll = self._ll = _param(ll, n)
        self.deadband = self._db = _param(deadband, n)
        self.on_delay, self.off_delay = _param(on_delay, n), _param(off_delay, n)
        self.raw = self._raw = np.zeros(n, dtype=np.int8)
        self._delays(self.on_delay, self.off_delay)
        self.st.hh, self.st.h, self.st.l, self.st.ll = _f8(self._hh), _f8(self._h), _f8(self._l), _f8(self._ll)
        self.st.db, self.st.raw = _f8(self._db), _i8(self._raw)
        # the nearest limit a normal value enters on either side (+-inf when none is set): the
        # whole-tick path's test that a quiet tick stays quiet
        hi, lo = np.fmin(self.h, self.hh), np.fmax(self.l, self.ll)
        self._enter_hi = np.where(np.isnan(hi), np.inf, hi)
        self._enter_lo = np.where(np.isnan(lo), -np.inf, lo)

    cdef Py_ssize_t _samples(self, Py_ssize_t n, const int* tag, const double* value, const double* ts,
                             const unsigned char* quality) noexcept nogil:
        return _each_sample(&self.st, &self.db, &self.ev, &self.slot[0], self.n_map, n, tag, value, ts, quality)

    cdef bint _pass(self, Py_ssize_t b, Py_ssize_t e, const double* v) noexcept nogil:
        return pw_limit_tick(e - b, v, &self._enter_hi[b], &self._enter_lo[b], &self._gate[b])

    cdef Py_ssize_t _block(self, Run run, Py_ssize_t j, Py_ssize_t b, Py_ssize_t e, const double* v,
                           const double* ts, Py_ssize_t n_ev) noexcept nogil:
        return _each_slot(&self.st, &self.db, &self.ev, n_ev, run, j, b, e, v, ts)


# ----------------------------------------------------------------------------------------------
# roc: rate of change over a window. The rate is measured from an anchor sample to the first
# usable sample at least window_s later (and strictly later); the anchor then moves there.
# Level 1 rising faster than max_per_s, -1 falling faster; held until the next measurement.

cdef inline bint _roc_step(RocStep* f, Py_ssize_t s, double v, unsigned char q, double t, signed char* r,
                           double* x) noexcept nogil:
    cdef double dt, rate
    if not _usable(v, q):
        return False
    if isnan(f.anchor_v[s]):
        f.anchor_v[s] = v
        f.anchor_t[s] = t
        return False
    dt = t - f.anchor_t[s]
    if dt <= 0.0 or dt < f.window[s]:
        r[0] = f.raw[s]
        x[0] = NAN
        return True
    rate = (v - f.anchor_v[s]) / dt
    r[0] = 1 if rate > f.max_per_s[s] else (-1 if rate < -f.max_per_s[s] else 0)
    f.raw[s] = r[0]
    f.anchor_v[s] = v
    f.anchor_t[s] = t
    x[0] = rate
    return True


cdef class RocKernel(_Kernel):
    cdef public object max_per_s, window_s, on_delay, off_delay, anchor_v, anchor_t, raw
    cdef double[::1] _max, _win, _av, _at
    cdef signed char[::1] _raw
    cdef RocStep st

    def __init__(self, slot_of_tag, max_per_s, window_s, on_delay, off_delay):
        _Kernel.__init__(self, slot_of_tag)
        n = self.n_slots
        self.max_per_s = self._max = _param(max_per_s, n)
        self.window_s = self._win = _param(window_s, n)
        self.on_delay, self.off_delay = _param(on_delay, n), _param(off_delay, n)
        self.anchor_v = self._av = np.full(n, np.nan)
        self.anchor_t = self._at = np.zeros(n)
        self.raw = self._raw = np.zeros(n, dtype=np.int8)
        self._delays(self.on_delay, self.off_delay)
        self.st.max_per_s, self.st.window = _f8(self._max), _f8(self._win)
        self.st.anchor_v, self.st.anchor_t, self.st.raw = _f8(self._av), _f8(self._at), _i8(self._raw)

    cdef Py_ssize_t _samples(self, Py_ssize_t n, const int* tag, const double* value, const double* ts,
                             const unsigned char* quality) noexcept nogil:
        return _each_sample(&self.st, &self.db, &self.ev, &self.slot[0], self.n_map, n, tag, value, ts, quality)


# ----------------------------------------------------------------------------------------------
# sensor: the sample itself is implausible. Level 1 above the physical range, -1 below it,
# 2 a BAD-quality (or NaN) sample inside it. COMM_FAIL samples are the agent's comm alarm and
# are skipped here.

cdef inline bint _sensor_step(SensorStep* f, Py_ssize_t s, double v, unsigned char q, signed char* r,
                              double* x) noexcept nogil:
    if q >= Q_COMM_FAIL:
        return False
    if isnan(v):
        r[0] = 2
    elif v > f.hi[s]:
        r[0] = 1
    elif v < f.lo[s]:
        r[0] = -1
    elif q == Q_BAD:
        r[0] = 2
    else:
        r[0] = 0
    x[0] = v
    return True


cdef class SensorKernel(_Kernel):
    cdef public object lo, hi, on_delay, off_delay
    cdef double[::1] _lo, _hi
    cdef SensorStep st

    def __init__(self, slot_of_tag, lo, hi, on_delay, off_delay):
        _Kernel.__init__(self, slot_of_tag)
        n = self.n_slots
        self.lo, self.hi = self._lo, self._hi = _param(lo, n), _param(hi, n)
        self.on_delay, self.off_delay = _param(on_delay, n), _param(off_delay, n)
        self._delays(self.on_delay, self.off_delay)
        self.st.lo, self.st.hi = _f8(self._lo), _f8(self._hi)

    cdef Py_ssize_t _samples(self, Py_ssize_t n, const int* tag, const double* value, const double* ts,
                             const unsigned char* quality) noexcept nogil:
        return _each_sample(&self.st, &self.db, &self.ev, &self.slot[0], self.n_map, n, tag, value, ts, quality)

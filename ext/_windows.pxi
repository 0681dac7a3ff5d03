# Window families, included by ext/_kernels.pyx: robust and flatline. Each judges a sample against
# what the tag did over a window of its own past.

from libc.math cimport fabs, isnan, INFINITY
from libc.string cimport memmove


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


cdef inline double _resolution(double* srt, Py_ssize_t w) noexcept nogil:
    """The smallest nonzero gap between neighbours of a sorted window (0: all equal)."""
    cdef double best = INFINITY, d
    cdef Py_ssize_t i
    for i in range(1, w):
        d = srt[i] - srt[i - 1]
        if 0.0 < d < best:
            best = d
    return best if best < INFINITY else 0.0


cdef inline double _robust_z(double* srt, Py_ssize_t w, double v, double min_mad) noexcept nogil:
    """z of v against a full sorted window of w values."""
    cdef Py_ssize_t half = w >> 1
    cdef double med, mad, scale
    med = srt[half] if w & 1 else 0.5 * (srt[half - 1] + srt[half])
    if w & 1:
        mad = _kth_dev(srt, w, med, half)
    else:
        mad = 0.5 * (_kth_dev(srt, w, med, half - 1) + _kth_dev(srt, w, med, half))
    scale = 1.4826 * mad
    if mad == 0.0:
        # more than half the window on one value: a quantised signal. Its resolution, the
        # smallest step between distinct values, is the least scale that means anything
        scale = _resolution(srt, w)
    if scale < min_mad:
        scale = min_mad
    if scale > 0.0:
        return (v - med) / scale
    if v != med:
        return INFINITY if v > med else -INFINITY
    return 0.0


cdef inline bint _robust_step(RobustStep* f, Py_ssize_t s, double v, unsigned char q, signed char* r,
                              double* x) noexcept nogil:
    cdef Py_ssize_t w, c, j
    cdef double z = 0.0
    cdef double* srt
    cdef double* ring
    if not _usable(v, q):
        return False
    w = f.window[s]
    c = f.count[s]
    srt = f.sorted + s * f.width
    ring = f.ring + s * f.width
    r[0] = 0
    if c == w:
        z = _robust_z(srt, w, v, f.min_mad[s])
        r[0] = 1 if z > f.threshold[s] else (-1 if z < -f.threshold[s] else 0)
        # evict the oldest sample from the sorted copy
        j = _bisect(srt, c, ring[f.pos[s]])
        memmove(&srt[j], &srt[j + 1], (c - j - 1) * sizeof(double))
        c -= 1
    j = _bisect(srt, c, v)
    memmove(&srt[j + 1], &srt[j], (c - j) * sizeof(double))
    srt[j] = v
    f.count[s] = c + 1
    ring[f.pos[s]] = v
    f.pos[s] = f.pos[s] + 1 if f.pos[s] + 1 < w else 0
    x[0] = z
    return True


cdef class RobustKernel(_Kernel):
    cdef public object window, threshold, min_mad, on_delay, off_delay
    cdef public object ring, sorted, count, pos
    cdef double[::1] _thr, _minmad
    cdef double[:, ::1] _ring, _sorted
    cdef long long[::1] _win, _count, _pos
    cdef RobustStep st

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
        self._win, self._thr, self._minmad = self.window, self.threshold, self.min_mad
        self._ring, self._sorted = self.ring, self.sorted
        self._count, self._pos = self.count, self.pos
        self._delays(self.on_delay, self.off_delay)
        self.st.window, self.st.threshold, self.st.min_mad = _i64(self._win), _f8(self._thr), _f8(self._minmad)
        self.st.width = width
        self.st.ring = &self._ring[0, 0] if n else NULL
        self.st.sorted = &self._sorted[0, 0] if n else NULL
        self.st.count, self.st.pos = _i64(self._count), _i64(self._pos)

    cdef Py_ssize_t _samples(self, Py_ssize_t n, const int* tag, const double* value, const double* ts,
                             const unsigned char* quality) noexcept nogil:
        return _each_sample(&self.st, &self.db, &self.ev, &self.slot[0], self.n_map, n, tag, value, ts, quality)


# ----------------------------------------------------------------------------------------------
# flatline: active (1) once the value has stayed within eps of the value that started the
# current flat stretch for duration_s; any move beyond eps starts a new stretch and clears.

cdef inline bint _flatline_step(FlatlineStep* f, Py_ssize_t s, double v, unsigned char q, double t,
                                signed char* r, double* x) noexcept nogil:
    if not _usable(v, q):
        return False
    if isnan(f.ref_v[s]) or fabs(v - f.ref_v[s]) > f.eps[s]:
        f.ref_v[s] = v
        f.ref_t[s] = t
        r[0] = 0
    else:
        r[0] = 1 if t - f.ref_t[s] >= f.duration[s] else 0
    x[0] = t - f.ref_t[s]
    return True


cdef class FlatlineKernel(_Kernel):
    cdef public object eps, duration, on_delay, off_delay, ref_v, ref_t
    cdef double[::1] _eps, _dur, _rv, _rt
    cdef FlatlineStep st

    def __init__(self, slot_of_tag, eps, duration, on_delay, off_delay):
        _Kernel.__init__(self, slot_of_tag)
        n = self.n_slots
        self.eps, self.duration = self._eps, self._dur = _param(eps, n), _param(duration, n)
        self.on_delay, self.off_delay = _param(on_delay, n), _param(off_delay, n)
        self.ref_v = self._rv = np.full(n, np.nan)
        self.ref_t = self._rt = np.zeros(n)
        self._delays(self.on_delay, self.off_delay)
        self.st.eps, self.st.duration = _f8(self._eps), _f8(self._dur)
        self.st.ref_v, self.st.ref_t = _f8(self._rv), _f8(self._rt)

    cdef Py_ssize_t _samples(self, Py_ssize_t n, const int* tag, const double* value, const double* ts,
                             const unsigned char* quality) noexcept nogil:
        return _each_sample(&self.st, &self.db, &self.ev, &self.slot[0], self.n_map, n, tag, value, ts, quality)

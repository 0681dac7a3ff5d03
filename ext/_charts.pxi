# Control-chart families, included by ext/_kernels.pyx: ewma and cusum. Both learn mean and sigma
# during a warm-up unless given, and both have a whole-tick path once every slot is warm.

from libc.math cimport nextafter, sqrt, INFINITY
from libc.float cimport DBL_MAX


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


cdef inline bint _warmed(double v, long long* n, long long warmup, double* mean, double* m2) noexcept nogil:
    """Welford's update with a sample of a slot still in warm-up; True when it completes."""
    cdef double d
    n[0] += 1
    d = v - mean[0]
    mean[0] += d / n[0]
    m2[0] += d * (v - mean[0])
    return n[0] == warmup


# ----------------------------------------------------------------------------------------------
# ewma: z = lambda*x + (1-lambda)*z, starting at the mean; alarm while z is outside
# mean +- L*sigma*sqrt(lambda/(2-lambda)) (the asymptotic EWMA control limits).

cdef inline void _ewma_band(EwmaStep* f, Py_ssize_t s) noexcept nogil:
    # The whole-tick pass's skip test: slot s's raw level equals its gate while z lies strictly
    # inside (qlo, qhi). Raw level r = 1 if z > ucl, -1 if z < lcl, else 0; where r equals the
    # gate z may stay:
    #   gate 0: lcl <= z <= ucl, i.e. nextafter(lcl, -inf) < z < nextafter(ucl, +inf)
    #   gate 1: ucl < z;  gate -1: z < lcl;  pending (NaN): nowhere.
    # An infinite z or NaN limits fall outside, which only sends the slot through the
    # per-sample logic: the band may be narrower than the truth, never wider.
    cdef double g = f.gate[s]
    if g == 0.0:
        f.qlo[s] = nextafter(f.lcl[s], -INFINITY)
        f.qhi[s] = nextafter(f.ucl[s], INFINITY)
    elif g == 1.0:
        f.qlo[s] = f.ucl[s]
        f.qhi[s] = INFINITY
    elif g == -1.0:
        f.qlo[s] = -INFINITY
        f.qhi[s] = f.lcl[s]
    else:
        f.qlo[s] = INFINITY
        f.qhi[s] = -INFINITY


cdef inline void _ewma_ready(EwmaStep* f, Py_ssize_t s, double sigma) noexcept nogil:
    cdef double w = f.L[s] * sigma * sqrt(f.lam[s] / (2.0 - f.lam[s]))
    f.z[s] = f.mean[s]
    f.ucl[s] = f.mean[s] + w
    f.lcl[s] = f.mean[s] - w
    _ewma_band(f, s)


cdef inline bint _ewma_step(EwmaStep* f, Py_ssize_t s, double v, unsigned char q, bint advance,
                            signed char* r, double* x) noexcept nogil:
    cdef double z
    if not _usable(v, q):
        return False
    if not advance:  # the whole-tick pass updated z
        z = f.z[s]
    elif f.count[s] < f.warmup[s]:
        if _warmed(v, &f.count[s], f.warmup[s], &f.mean[s], &f.m2[s]):
            _ewma_ready(f, s, _sigma(f.m2[s], f.count[s], f.min_sigma[s]))
            f.warming[0] -= 1
        return False
    else:
        z = f.lam[s] * v + (1.0 - f.lam[s]) * f.z[s]
        f.z[s] = z
    r[0] = 1 if z > f.ucl[s] else (-1 if z < f.lcl[s] else 0)
    x[0] = z
    return True


cdef class EwmaKernel(_TickKernel):
    cdef public object lam, L, min_sigma, warmup, on_delay, off_delay
    cdef public object count, mean, m2, z, ucl, lcl
    cdef const double[::1] _lam
    cdef double[::1] _L, _minsig, _mean, _m2, _z, _ucl, _lcl, _qlo, _qhi
    cdef long long[::1] _warm, _count
    cdef readonly bint one_lambda           # every slot has lambda _lam1 (lam is read-only)
    cdef double _lam1
    cdef EwmaStep st

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
        self._warm, self._count = self.warmup, self.count
        self._mean, self._m2, self._z, self._ucl, self._lcl = self.mean, self.m2, self.z, self.ucl, self.lcl
        self._delays(self.on_delay, self.off_delay)
        self.st.lam = &self._lam[0] if n else NULL
        self.st.L, self.st.min_sigma = _f8(self._L), _f8(self._minsig)
        self.st.warmup, self.st.count = _i64(self._warm), _i64(self._count)
        self.st.mean, self.st.m2, self.st.z = _f8(self._mean), _f8(self._m2), _f8(self._z)
        self.st.ucl, self.st.lcl = _f8(self._ucl), _f8(self._lcl)
        self.st.qlo, self.st.qhi, self.st.gate = _f8(self._qlo), _f8(self._qhi), _f8(self._gate)
        self.st.warming = &self.n_warming
        given_mean, given_sigma = _param(mean, n), _param(sigma, n)
        for s in range(n):
            if not isnan(given_mean[s]):
                self._mean[s] = given_mean[s]
                self._count[s] = self._warm[s]
                _ewma_ready(&self.st, s, given_sigma[s] if given_sigma[s] > self._minsig[s] else self._minsig[s])
        for s in range(n):
            _ewma_band(&self.st, s)
        self.n_warming = np.count_nonzero(self.count < self.warmup)

    cdef Py_ssize_t _samples(self, Py_ssize_t n, const int* tag, const double* value, const double* ts,
                             const unsigned char* quality) noexcept nogil:
        return _each_sample(&self.st, &self.db, &self.ev, &self.slot[0], self.n_map, n, tag, value, ts, quality)

    cdef bint _pass(self, Py_ssize_t b, Py_ssize_t e, const double* v) noexcept nogil:
        if self.one_lambda:
            return pw_ewma_tick1(e - b, v, self._lam1, &self._z[b], &self._qlo[b], &self._qhi[b])
        return pw_ewma_tick(e - b, v, &self._lam[b], &self._z[b], &self._qlo[b], &self._qhi[b])

    cdef Py_ssize_t _block(self, Run run, Py_ssize_t j, Py_ssize_t b, Py_ssize_t e, const double* v,
                           const double* ts, Py_ssize_t n_ev) noexcept nogil:
        return _each_slot(&self.st, &self.db, &self.ev, n_ev, run, j, b, e, v, ts)


# ----------------------------------------------------------------------------------------------
# cusum: two-sided Page CUSUM on standardised samples, S+ = max(0, S+ + x - k),
# S- = max(0, S- - x - k); crossing h raises (1 up, -1 down) and restarts both sums, so a
# persistent shift keeps re-crossing and the off-delay holds the alarm between crossings.

cdef inline bint _cusum_step(CusumStep* f, Py_ssize_t s, double v, unsigned char q, bint advance,
                             signed char* r, double* x) noexcept nogil:
    cdef double y, sp, sn
    if not _usable(v, q):
        return False
    if not advance:  # the whole-tick pass updated the sums
        sp = f.sp[s]
        sn = f.sn[s]
    elif f.count[s] < f.warmup[s]:
        if _warmed(v, &f.count[s], f.warmup[s], &f.mean[s], &f.m2[s]):
            f.isig[s] = _inverse(_sigma(f.m2[s], f.count[s], f.min_sigma[s]))
            f.warming[0] -= 1
        return False
    else:
        y = (v - f.mean[s]) * f.isig[s]
        sp = _max0(f.sp[s] + y - f.k[s])
        sn = _max0(f.sn[s] - y - f.k[s])
    r[0] = 0
    x[0] = 0.0
    if sp > f.h[s]:
        r[0] = 1
        x[0] = sp
    elif sn > f.h[s]:
        r[0] = -1
        x[0] = -sn
    if r[0] != 0:
        sp = 0.0
        sn = 0.0
    f.sp[s] = sp
    f.sn[s] = sn
    return True


cdef class CusumKernel(_TickKernel):
    cdef public object k, h, min_sigma, warmup, off_delay
    cdef public object count, mean, m2, inv_sigma, sp, sn
    cdef double[::1] _k, _h, _minsig, _mean, _m2, _isig, _sp, _sn
    cdef long long[::1] _warm, _count
    cdef CusumStep st

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
        self._k, self._h, self._minsig = self.k, self.h, self.min_sigma
        self._warm, self._count = self.warmup, self.count
        self._mean, self._m2, self._isig, self._sp, self._sn = self.mean, self.m2, self.inv_sigma, self.sp, self.sn
        self._delays(np.zeros(n), self.off_delay)  # no on-delay: a crossing raises at once
        self.st.k, self.st.h, self.st.min_sigma = _f8(self._k), _f8(self._h), _f8(self._minsig)
        self.st.warmup, self.st.count = _i64(self._warm), _i64(self._count)
        self.st.mean, self.st.m2, self.st.isig = _f8(self._mean), _f8(self._m2), _f8(self._isig)
        self.st.sp, self.st.sn = _f8(self._sp), _f8(self._sn)
        self.st.warming = &self.n_warming
        given_mean, given_sigma = _param(mean, n), _param(sigma, n)
        for s in range(n):
            if not isnan(given_mean[s]):
                self._mean[s] = given_mean[s]
                self._count[s] = self._warm[s]
                self._isig[s] = _inverse(given_sigma[s] if given_sigma[s] > self._minsig[s] else self._minsig[s])
        self.n_warming = np.count_nonzero(self.count < self.warmup)

    cdef Py_ssize_t _samples(self, Py_ssize_t n, const int* tag, const double* value, const double* ts,
                             const unsigned char* quality) noexcept nogil:
        return _each_sample(&self.st, &self.db, &self.ev, &self.slot[0], self.n_map, n, tag, value, ts, quality)

    cdef bint _pass(self, Py_ssize_t b, Py_ssize_t e, const double* v) noexcept nogil:
        return pw_cusum_tick(e - b, v, &self._mean[b], &self._isig[b], &self._k[b], &self._h[b], &self._sp[b],
                             &self._sn[b], &self._gate[b])

    cdef Py_ssize_t _block(self, Run run, Py_ssize_t j, Py_ssize_t b, Py_ssize_t e, const double* v,
                           const double* ts, Py_ssize_t n_ev) noexcept nogil:
        return _each_slot(&self.st, &self.db, &self.ev, n_ev, run, j, b, e, v, ts)

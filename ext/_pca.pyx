# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Kernels of the online PCA family: gather a batch of samples into ticks, and debounce a
series of per-tick alarm levels.

A tick is a run of samples of the model's tags sharing one timestamp; after its last sample
the model sees the latest value of every variable. The projection itself (T^2, SPE) runs as
matrix products over all ticks of the batch, outside these loops.
"""

import numpy as np

include "_build.pxi"

from libc.math cimport isnan


cdef class TickCollector:
    """The latest autoscaled value of each model variable, and which ones are missing."""

    cdef public object var_of_tag, latest, present
    cdef int[::1] _var
    cdef Py_ssize_t n_map, p
    cdef double[::1] _mean, _inv_scale, _latest
    cdef unsigned char[::1] _present

    def __init__(self, var_of_tag, mean, scale):
        self.var_of_tag = np.ascontiguousarray(var_of_tag, dtype=np.int32)
        self._var = self.var_of_tag
        self.n_map = self.var_of_tag.shape[0]
        self.p = len(mean)
        self._mean = np.ascontiguousarray(mean, dtype=np.float64).copy()
        self._inv_scale = 1.0 / np.ascontiguousarray(scale, dtype=np.float64)
        self.latest = np.zeros(self.p)
        self.present = np.zeros(self.p, dtype=np.uint8)
        self._latest, self._present = self.latest, self.present

    def collect(self, const int[::1] tag, const double[::1] value, const double[::1] ts,
                const unsigned char[::1] quality):
        """(Z, idx): one autoscaled row per complete tick, and the sample index ending it.

        A BAD/COMM_FAIL or NaN sample marks its variable missing until a usable one arrives;
        ticks with a missing variable are not judged (stale or invalid inputs would make the
        statistics lie).
        """
        cdef Py_ssize_t n = tag.shape[0], i, j, k, n_ticks = 0, last = -1
        cdef int t, v
        cdef Py_ssize_t p = self.p
        cdef bint complete
        # a tick ends at the last model sample before a different timestamp (or batch end)
        ends = np.empty(n, dtype=np.intp)
        cdef Py_ssize_t[::1] e = ends
        with nogil:
            for i in range(n):
                t = tag[i]
                if t < 0 or t >= self.n_map or self._var[t] < 0:
                    continue
                if last >= 0 and ts[i] != ts[last]:
                    e[n_ticks] = last
                    n_ticks += 1
                last = i
            if last >= 0:
                e[n_ticks] = last
                n_ticks += 1
        Z = np.empty((n_ticks, p))
        idx = np.empty(n_ticks, dtype=np.intp)
        cdef double[:, ::1] z = Z
        cdef Py_ssize_t[::1] ix = idx
        cdef Py_ssize_t n_out = 0
        cdef double x
        with nogil:
            k = 0
            for i in range(n):
                if k >= n_ticks:
                    break
                t = tag[i]
                if t >= 0 and t < self.n_map and self._var[t] >= 0:
                    v = self._var[t]
                    x = value[i]
                    if quality[i] >= 2 or isnan(x):
                        self._present[v] = 0
                    else:
                        self._latest[v] = (x - self._mean[v]) * self._inv_scale[v]
                        self._present[v] = 1
                if i == e[k]:
                    k += 1
                    complete = True
                    for j in range(p):
                        if not self._present[j]:
                            complete = False
                            break
                    if complete:
                        for j in range(p):
                            z[n_out, j] = self._latest[j]
                        ix[n_out] = i
                        n_out += 1
        return Z[:n_out], idx[:n_out]


cdef class SeriesDebounce:
    """On/off delays over a series of raw levels for one alarm (same rules as the univariate
    families: on-delay towards more severe, off-delay back, timers restart on raw changes)."""

    cdef public double on_delay, off_delay, since
    cdef public signed char level, pending

    def __init__(self, double on_delay, double off_delay):
        self.on_delay = on_delay
        self.off_delay = off_delay
        self.level = 0
        self.pending = 0
        self.since = 0.0

    def run(self, const signed char[::1] raw, const double[::1] ts):
        """(position, previous level, new level) arrays of the series' level changes."""
        cdef Py_ssize_t n = raw.shape[0], i, n_ev = 0
        cdef signed char r, lvl = self.level, pend = self.pending, a, b
        cdef double since = self.since, delay
        pos = np.empty(n, dtype=np.intp)
        prev = np.empty(n, dtype=np.int8)
        new = np.empty(n, dtype=np.int8)
        cdef Py_ssize_t[::1] po = pos
        cdef signed char[::1] pr = prev, nw = new
        with nogil:
            for i in range(n):
                r = raw[i]
                if r == lvl:
                    pend = r
                    continue
                if r != pend:
                    pend = r
                    since = ts[i]
                a = r if r > 0 else -r
                b = lvl if lvl > 0 else -lvl
                if r != 0 and (lvl == 0 or (r > 0) != (lvl > 0) or a > b):
                    delay = self.on_delay
                else:
                    delay = self.off_delay
                if ts[i] - since >= delay:
                    po[n_ev] = i
                    pr[n_ev] = lvl
                    nw[n_ev] = r
                    n_ev += 1
                    lvl = r
        self.level, self.pending, self.since = lvl, pend, since
        return pos[:n_ev], prev[:n_ev], new[:n_ev]

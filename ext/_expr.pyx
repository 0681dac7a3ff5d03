# cython: language_level=3
"""The expression kernel: every computed tag's postfix program, evaluated in one call per batch.

A batch (tag, value, ts, quality; time-ordered, as every batch is) is walked once: samples
update the last value and quality of their tag, and at each change of timestamp (a tick) the
programs that read a tag updated in that tick run, in dependency order, each writing its tag
(which may make later programs run in the same tick). Window functions keep a ring buffer of
(time, value) per window in the kernel object; a ring starts at the capacity given and doubles
up to MAX_WINDOW_SAMPLES, past which the oldest sample is dropped. rate reads the ring's ends;
rolling_mean keeps a running sum (recomputed from the values every SUM_EVERY samples);
rolling_median, rolling_max and rolling_min keep a sorted copy of the values (binary search and
memmove per sample in, per sample out).
"""

from libc.math cimport NAN, fabs, isfinite, isnan
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memmove

import numpy as np

include "_build.pxi"

OP_NAMES = ("TAG", "CONST", "NEG", "ABS", "NOT", "ADD", "SUB", "MUL", "DIV", "LT", "LE", "GT", "GE", "EQ",
            "NE", "AND", "OR", "MIN", "MAX", "SUM", "MEAN", "RATE", "RMEAN", "RMEDIAN", "RMAX", "RMIN")

cdef enum:
    OP_TAG, OP_CONST, OP_NEG, OP_ABS, OP_NOT, OP_ADD, OP_SUB, OP_MUL, OP_DIV, OP_LT, OP_LE, OP_GT, OP_GE, OP_EQ, \
    OP_NE, OP_AND, OP_OR, OP_MIN, OP_MAX, OP_SUM, OP_MEAN, OP_RATE, OP_RMEAN, OP_RMEDIAN, OP_RMAX, OP_RMIN

cdef enum:
    Q_BAD = 2
    Q_NEVER = 255  # no sample yet: a program reading such a tag writes nothing

MAX_WINDOW_SAMPLES = 65536
cdef Py_ssize_t SUM_EVERY = 4096
cdef Py_ssize_t _MAX_CAP = MAX_WINDOW_SAMPLES


cdef struct Ring:
    double seconds
    double* t
    double* v
    double* s  # the values in ascending order (median, max, min), else NULL
    double sum  # of the values (mean), recomputed exactly every SUM_EVERY pushes
    Py_ssize_t head, count, cap, pushes  # cap: a power of two


cdef int _none_i = 0
cdef double _none_d = 0.0


cdef int* _ip(a):
    cdef int[::1] m = a
    return &m[0] if m.shape[0] else &_none_i


cdef double* _dp(a):
    cdef double[::1] m = a
    return &m[0] if m.shape[0] else &_none_d


cdef inline double _truth(double x) nogil:
    return 1.0 if x != 0.0 else 0.0


cdef void _insert(double* s, Py_ssize_t n, double x) noexcept nogil:
    """Insert x into the ascending s[0:n] (room for n + 1)."""
    cdef Py_ssize_t lo = 0, hi = n, mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if s[mid] <= x:
            lo = mid + 1
        else:
            hi = mid
    memmove(s + lo + 1, s + lo, (n - lo) * sizeof(double))
    s[lo] = x


cdef void _remove(double* s, Py_ssize_t n, double x) noexcept nogil:
    """Remove one x (present) from the ascending s[0:n]."""
    cdef Py_ssize_t lo = 0, hi = n, mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if s[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    memmove(s + lo, s + lo + 1, (n - lo - 1) * sizeof(double))


cdef class ExprKernel:
    cdef Py_ssize_t n_tags, n_prog, n_win, depth, n_out, out_cap, n_pending, first_pending, at
    # the arrays, kept alive by ``_keep``, and raw pointers into them for the nogil loops
    cdef object _keep
    cdef int* _op
    cdef int* _arg
    cdef int* _start
    cdef int* _out
    cdef int* _in_start
    cdef int* _in_tag
    cdef int* _cons_start
    cdef int* _cons_prog
    cdef double* _const
    cdef double* _lv
    cdef unsigned char* _lq
    cdef public object last_value, last_quality
    cdef Ring* rings
    cdef double* stack
    cdef unsigned char* pending
    cdef int* o_tag
    cdef Py_ssize_t* o_pos
    cdef double* o_val
    cdef double* o_ts
    cdef unsigned char* o_q

    def __cinit__(self):
        self.rings = NULL
        self.stack = NULL
        self.pending = NULL
        self.o_tag = NULL
        self.o_pos = NULL
        self.o_val = self.o_ts = NULL
        self.o_q = NULL

    def __init__(self, Py_ssize_t n_tags, op, arg, constants, start, out, in_start, in_tag, cons_start, cons_prog,
                 window_seconds, window_cap, Py_ssize_t depth):
        """Programs in dependency order: program p is code[start[p]:start[p + 1]] writing tag
        out[p], reading tags in_tag[in_start[p]:in_start[p + 1]]; tag t is read by programs
        cons_prog[cons_start[t]:cons_start[t + 1]]. Window w spans window_seconds[w], its ring
        starting at window_cap[w] samples (rounded up to a power of two)."""
        cdef Py_ssize_t w, c
        self.n_tags, self.n_prog, self.depth = n_tags, len(out), max(depth, 1)
        ints = [np.ascontiguousarray(a, dtype=np.int32) for a in
                (op, arg, start, out, in_start, in_tag, cons_start, cons_prog)]
        consts = np.ascontiguousarray(constants, dtype=np.float64)
        if ints[6].shape[0] != n_tags + 1 or ints[2].shape[0] != self.n_prog + 1:
            raise ValueError("cons_start needs n_tags + 1 entries and start one more than out")
        if consts.shape[0] != ints[0].shape[0] or ints[1].shape[0] != ints[0].shape[0]:
            raise ValueError("op, arg and constants must have the same length")
        self.last_value = np.full(n_tags, np.nan)
        self.last_quality = np.full(n_tags, Q_NEVER, dtype=np.uint8)
        self._keep = (ints, consts)
        self._op, self._arg, self._start, self._out = _ip(ints[0]), _ip(ints[1]), _ip(ints[2]), _ip(ints[3])
        self._in_start, self._in_tag = _ip(ints[4]), _ip(ints[5])
        self._cons_start, self._cons_prog = _ip(ints[6]), _ip(ints[7])
        self._const = _dp(consts)
        self._lv = _dp(self.last_value)
        cdef unsigned char[::1] lq = self.last_quality
        self._lq = &lq[0]
        self.n_win = len(window_seconds)
        self.rings = <Ring*>malloc(max(self.n_win, 1) * sizeof(Ring))
        self.stack = <double*>malloc(self.depth * sizeof(double))
        self.pending = <unsigned char*>malloc(max(self.n_prog, 1))
        if self.rings == NULL or self.stack == NULL or self.pending == NULL:
            raise MemoryError()
        for w in range(self.n_prog):
            self.pending[w] = 0
        for w in range(self.n_win):
            c = 8
            while c < min(int(window_cap[w]), _MAX_CAP):
                c *= 2
            self.rings[w].seconds = float(window_seconds[w])
            self.rings[w].head = self.rings[w].count = 0
            self.rings[w].cap = c
            self.rings[w].t = <double*>malloc(c * sizeof(double))
            self.rings[w].v = <double*>malloc(c * sizeof(double))
            if self.rings[w].t == NULL or self.rings[w].v == NULL:
                raise MemoryError()
            self.rings[w].sum = 0.0
            self.rings[w].pushes = 0
            self.rings[w].s = NULL
        for w in range(len(ints[0])):  # the windows whose function reads the values in order
            if ints[0][w] in (OP_RMEDIAN, OP_RMAX, OP_RMIN):
                c = ints[1][w]
                self.rings[c].s = <double*>malloc(self.rings[c].cap * sizeof(double))
                if self.rings[c].s == NULL:
                    raise MemoryError()
        self.out_cap = max(self.n_prog, 16)
        self.o_tag = <int*>malloc(self.out_cap * sizeof(int))
        self.o_pos = <Py_ssize_t*>malloc(self.out_cap * sizeof(Py_ssize_t))
        self.o_val = <double*>malloc(self.out_cap * sizeof(double))
        self.o_ts = <double*>malloc(self.out_cap * sizeof(double))
        self.o_q = <unsigned char*>malloc(self.out_cap)
        if self.o_tag == NULL or self.o_pos == NULL or self.o_val == NULL or self.o_ts == NULL or self.o_q == NULL:
            raise MemoryError()
        self.n_pending = 0
        self.first_pending = self.n_prog

    def __dealloc__(self):
        cdef Py_ssize_t w
        if self.rings != NULL:
            for w in range(self.n_win):
                free(self.rings[w].t)
                free(self.rings[w].v)
                free(self.rings[w].s)
            free(self.rings)
        free(self.stack)
        free(self.pending)
        free(self.o_tag)
        free(self.o_pos)
        free(self.o_val)
        free(self.o_ts)
        free(self.o_q)

    def window_samples(self):
        """The number of samples each window holds now (for tests and diagnostics)."""
        return [self.rings[w].count for w in range(self.n_win)]

    def evaluate(self, const int[::1] tag, const double[::1] value, const double[::1] ts,
                 const unsigned char[::1] quality):
        """The computed samples this batch makes, as (tag, value, ts, quality, pos) arrays in
        time order, or None when it makes none. ``pos``: the index of the batch sample each
        computed sample belongs before (its tick's end: the first sample of the next tick, or
        the batch length)."""
        cdef Py_ssize_t n = tag.shape[0], i
        cdef int t
        cdef double cur
        cdef int ok = 0
        self.n_out = 0
        if n == 0:
            return None
        cur = ts[0]
        with nogil:
            for i in range(n):
                if ts[i] != cur:
                    self.at = i
                    ok = self._tick(cur)
                    if ok < 0:
                        break
                    cur = ts[i]
                t = tag[i]
                if t < 0 or t >= self.n_tags:
                    continue
                self._lv[t] = value[i]
                self._lq[t] = quality[i]
                self._mark(t)
            if ok >= 0:
                self.at = n
                ok = self._tick(cur)
        if ok < 0:
            raise MemoryError()
        if self.n_out == 0:
            return None
        m = self.n_out
        out_tag = np.empty(m, dtype=np.int32)
        out_val = np.empty(m)
        out_ts = np.empty(m)
        out_q = np.empty(m, dtype=np.uint8)
        out_pos = np.empty(m, dtype=np.intp)
        cdef Py_ssize_t[::1] e = out_pos
        cdef int[::1] a = out_tag
        cdef double[::1] b = out_val, c = out_ts
        cdef unsigned char[::1] d = out_q
        for i in range(m):
            a[i] = self.o_tag[i]
            b[i] = self.o_val[i]
            c[i] = self.o_ts[i]
            d[i] = self.o_q[i]
            e[i] = self.o_pos[i]
        return out_tag, out_val, out_ts, out_q, out_pos

    cdef inline void _mark(self, int t) noexcept nogil:
        cdef Py_ssize_t k
        cdef int p
        for k in range(self._cons_start[t], self._cons_start[t + 1]):
            p = self._cons_prog[k]
            if not self.pending[p]:
                self.pending[p] = 1
                self.n_pending += 1
                if p < self.first_pending:
                    self.first_pending = p

    cdef int _tick(self, double t) noexcept nogil:
        """Run the pending programs in order; -1 when out of memory."""
        cdef Py_ssize_t p = self.first_pending, k
        cdef int out
        cdef unsigned char q, worst
        cdef double r
        while self.n_pending > 0 and p < self.n_prog:
            if not self.pending[p]:
                p += 1
                continue
            self.pending[p] = 0
            self.n_pending -= 1
            worst = 0
            for k in range(self._in_start[p], self._in_start[p + 1]):
                q = self._lq[self._in_tag[k]]
                if q > worst:
                    worst = q
            p += 1
            if worst == Q_NEVER:
                continue
            if worst >= Q_BAD:
                r = NAN
            else:
                r = self._run(p - 1, t)
                if isnan(r):  # undefined this tick (a window without enough samples, 0/0)
                    continue
                if not isfinite(r):
                    r, worst = NAN, Q_BAD
            out = self._out[p - 1]
            if self._emit(out, r, t, worst) < 0:
                return -1
            self._lv[out] = r
            self._lq[out] = worst
            self._mark(out)
        self.first_pending = self.n_prog
        return 0

    cdef int _emit(self, int tag, double v, double t, unsigned char q) noexcept nogil:
        cdef Py_ssize_t cap
        if self.n_out == self.out_cap:
            cap = self.out_cap * 2
            self.o_tag = <int*>realloc(self.o_tag, cap * sizeof(int))
            self.o_pos = <Py_ssize_t*>realloc(self.o_pos, cap * sizeof(Py_ssize_t))
            self.o_val = <double*>realloc(self.o_val, cap * sizeof(double))
            self.o_ts = <double*>realloc(self.o_ts, cap * sizeof(double))
            self.o_q = <unsigned char*>realloc(self.o_q, cap)
            if self.o_tag == NULL or self.o_pos == NULL or self.o_val == NULL or self.o_ts == NULL or self.o_q == NULL:
                return -1
            self.out_cap = cap
        self.o_tag[self.n_out] = tag
        self.o_pos[self.n_out] = self.at
        self.o_val[self.n_out] = v
        self.o_ts[self.n_out] = t
        self.o_q[self.n_out] = q
        self.n_out += 1
        return 0

    cdef double _run(self, Py_ssize_t p, double t) noexcept nogil:
        cdef double* s = self.stack
        cdef Py_ssize_t sp = 0, j, k, n
        cdef int o
        cdef double a, b
        for j in range(self._start[p], self._start[p + 1]):
            o = self._op[j]
            if o == OP_TAG:
                s[sp] = self._lv[self._arg[j]]
                sp += 1
            elif o == OP_CONST:
                s[sp] = self._const[j]
                sp += 1
            elif o == OP_NEG:
                s[sp - 1] = -s[sp - 1]
            elif o == OP_ABS:
                s[sp - 1] = fabs(s[sp - 1])
            elif o == OP_NOT:
                if not isnan(s[sp - 1]):
                    s[sp - 1] = 1.0 - _truth(s[sp - 1])
            elif o <= OP_OR:
                sp -= 1
                a = s[sp - 1]
                b = s[sp]
                s[sp - 1] = _binary(o, a, b)
            elif o <= OP_MEAN:
                n = self._arg[j]
                sp -= n
                s[sp] = _nary(o, s + sp, n)
                sp += 1
            else:
                s[sp - 1] = self._window(o, &self.rings[self._arg[j]], t, s[sp - 1])
        return s[0]

    cdef double _window(self, int o, Ring* r, double t, double x) noexcept nogil:
        cdef Py_ssize_t mask, newest, k
        if not isnan(x) and self._push(r, t, x) < 0:
            return NAN
        mask = r.cap - 1
        while r.count > 0 and r.t[r.head] < t - r.seconds:
            self._drop_oldest(r)
        if r.count == 0:
            return NAN
        if o == OP_RATE:
            newest = (r.head + r.count - 1) & mask
            if r.count < 2 or not r.t[newest] > r.t[r.head]:
                return NAN
            return (r.v[newest] - r.v[r.head]) / (r.t[newest] - r.t[r.head])
        if o == OP_RMEAN:
            return r.sum / r.count
        if o == OP_RMAX:
            return r.s[r.count - 1]
        if o == OP_RMIN:
            return r.s[0]
        k = (r.count - 1) // 2
        return r.s[k] if r.count % 2 else 0.5 * (r.s[k] + r.s[k + 1])

    cdef void _drop_oldest(self, Ring* r) noexcept nogil:
        cdef double x = r.v[r.head]
        if r.s != NULL:
            _remove(r.s, r.count, x)
        r.sum -= x
        r.head = (r.head + 1) & (r.cap - 1)
        r.count -= 1
        if r.count == 0:
            r.sum = 0.0

    cdef int _push(self, Ring* r, double t, double x) noexcept nogil:
        cdef Py_ssize_t mask = r.cap - 1, newest, i
        cdef double old
        if r.count > 0:
            newest = (r.head + r.count - 1) & mask
            if r.t[newest] >= t:  # the same tick again (or a clock step back): the later value counts
                old = r.v[newest]
                r.v[newest] = x
                r.sum += x - old
                if r.s != NULL:
                    _remove(r.s, r.count, old)
                    _insert(r.s, r.count - 1, x)
                return 0
        if r.count == r.cap:
            if r.cap >= _MAX_CAP:
                self._drop_oldest(r)
            elif self._grow(r) < 0:
                return -1
            mask = r.cap - 1
        if r.s != NULL:
            _insert(r.s, r.count, x)
        i = (r.head + r.count) & mask
        r.t[i] = t
        r.v[i] = x
        r.count += 1
        r.pushes += 1
        if r.pushes % SUM_EVERY == 0:  # a running sum drifts: start again from the values
            r.sum = 0.0
            for i in range(r.count):
                r.sum += r.v[(r.head + i) & mask]
        else:
            r.sum += x
        return 0

    cdef int _grow(self, Ring* r) noexcept nogil:
        cdef Py_ssize_t cap = r.cap * 2, mask = r.cap - 1, i
        cdef double* nt = <double*>malloc(cap * sizeof(double))
        cdef double* nv = <double*>malloc(cap * sizeof(double))
        cdef double* ns = NULL
        if r.s != NULL:
            ns = <double*>realloc(r.s, cap * sizeof(double))
            if ns == NULL:
                free(nt)
                free(nv)
                return -1
            r.s = ns
        if nt == NULL or nv == NULL:
            free(nt)
            free(nv)
            return -1
        for i in range(r.count):
            nt[i] = r.t[(r.head + i) & mask]
            nv[i] = r.v[(r.head + i) & mask]
        free(r.t)
        free(r.v)
        r.t, r.v, r.head, r.cap = nt, nv, 0, cap
        return 0


cdef inline double _binary(int o, double a, double b) noexcept nogil:
    if o == OP_ADD:
        return a + b
    if o == OP_SUB:
        return a - b
    if o == OP_MUL:
        return a * b
    if o == OP_DIV:
        return a / b
    if isnan(a) or isnan(b):
        return NAN
    if o == OP_LT:
        return 1.0 if a < b else 0.0
    if o == OP_LE:
        return 1.0 if a <= b else 0.0
    if o == OP_GT:
        return 1.0 if a > b else 0.0
    if o == OP_GE:
        return 1.0 if a >= b else 0.0
    if o == OP_EQ:
        return 1.0 if a == b else 0.0
    if o == OP_NE:
        return 1.0 if a != b else 0.0
    if o == OP_AND:
        return _truth(a) * _truth(b)
    return 1.0 if (a != 0.0 or b != 0.0) else 0.0


cdef inline double _nary(int o, double* x, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    cdef double acc = x[0]
    for i in range(n):
        if isnan(x[i]):
            return NAN
    for i in range(1, n):
        if o == OP_MIN:
            if x[i] < acc:
                acc = x[i]
        elif o == OP_MAX:
            if x[i] > acc:
                acc = x[i]
        else:
            acc += x[i]
    return acc / n if o == OP_MEAN else acc

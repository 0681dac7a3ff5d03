/* The floors of bench/kernels.py: tight C loops doing the kernels' work, built the way
 * setup.py builds the kernels (gcc -O3 -ffp-contract=off, ext/ on the include path). */

/* The floor: the same struct-of-arrays update as the kernels (slot map, quality and NaN skip,
 * the statistic, the limit test, the debounce state), with nothing else around it. Its CUSUM
 * takes max(x, 0) the way the kernel does (maxsd): fmax would be a libm call per sum on x86-64
 * and make the floor, not the kernel, the slow one. */
#include <math.h>
#include <stdint.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
static inline double max0(double x) { return _mm_cvtsd_f64(_mm_max_sd(_mm_set_sd(x), _mm_setzero_pd())); }
#else
static inline double max0(double x) { return fmax(x, 0.0); }
#endif
static inline int debounce(signed char raw, double t, signed char *lvl, signed char *pend,
                           double *since, double on, double off) {
    if (raw == *lvl) { *pend = raw; return 0; }
    if (raw != *pend) { *pend = raw; *since = t; }
    int a = raw > 0 ? raw : -raw, b = *lvl > 0 ? *lvl : -*lvl;
    double d = (raw != 0 && (*lvl == 0 || (raw > 0) != (*lvl > 0) || a > b)) ? on : off;
    if (t - *since >= d) { *lvl = raw; return 1; }
    return 0;
}
/* the slot of sample i when the family watches its tag and the sample is usable (neither BAD
 * nor COMM_FAIL nor NaN), else -1 */
static inline int usable(long i, const int *tag, const double *v, const uint8_t *q, long n_map,
                         const int *slot) {
    int t = tag[i];
    if (t < 0 || t >= n_map) return -1;
    int s = slot[t];
    return s < 0 || q[i] >= 2 || isnan(v[i]) ? -1 : s;
}
static inline signed char limit_raw(double x, signed char rr, double hh, double h, double l,
                                    double ll, double db) {
    signed char hi = 0, lo = 0;
    if (x >= hh || (rr >= 2 && x > hh - db)) hi = 2;
    else if (x >= h || (rr >= 1 && x > h - db)) hi = 1;
    if (x <= ll || (rr <= -2 && x < ll + db)) lo = -2;
    else if (x <= l || (rr <= -1 && x < l + db)) lo = -1;
    return (hi && lo) ? (rr > 0 ? lo : hi) : (hi ? hi : lo);
}
long ewma(long n, const int *tag, const double *v, const double *ts, const uint8_t *q,
          long n_map, const int *slot, const double *lam, double *z, const double *ucl,
          const double *lcl, signed char *lvl, signed char *pend, double *since) {
    long ev = 0;
    for (long i = 0; i < n; i++) {
        int s = usable(i, tag, v, q, n_map, slot);
        if (s < 0) continue;
        double zz = lam[s] * v[i] + (1.0 - lam[s]) * z[s];
        z[s] = zz;
        signed char r = zz > ucl[s] ? 1 : (zz < lcl[s] ? -1 : 0);
        ev += debounce(r, ts[i], &lvl[s], &pend[s], &since[s], 0.0, 0.0);
    }
    return ev;
}
long cusum(long n, const int *tag, const double *v, const double *ts, const uint8_t *q,
           long n_map, const int *slot, const double *mean, const double *isig, const double *k,
           const double *h, double *sp, double *sn, signed char *lvl, signed char *pend, double *since) {
    long ev = 0;
    for (long i = 0; i < n; i++) {
        int s = usable(i, tag, v, q, n_map, slot);
        if (s < 0) continue;
        double x = (v[i] - mean[s]) * isig[s];
        double p = sp[s] + x - k[s], m = sn[s] - x - k[s];
        p = max0(p); m = max0(m);
        signed char r = p > h[s] ? 1 : (m > h[s] ? -1 : 0);
        if (r) { p = 0; m = 0; }
        sp[s] = p; sn[s] = m;
        ev += debounce(r, ts[i], &lvl[s], &pend[s], &since[s], 0.0, 10.0);
    }
    return ev;
}
long roc(long n, const int *tag, const double *v, const double *ts, const uint8_t *q,
         long n_map, const int *slot, const double *mx, const double *win, double *av, double *at,
         signed char *raw, signed char *lvl, signed char *pend, double *since) {
    long ev = 0;
    for (long i = 0; i < n; i++) {
        int s = usable(i, tag, v, q, n_map, slot);
        if (s < 0) continue;
        if (isnan(av[s])) { av[s] = v[i]; at[s] = ts[i]; continue; }
        double dt = ts[i] - at[s];
        signed char r = raw[s];
        if (dt > 0.0 && dt >= win[s]) {
            double rate = (v[i] - av[s]) / dt;
            r = rate > mx[s] ? 1 : (rate < -mx[s] ? -1 : 0);
            raw[s] = r; av[s] = v[i]; at[s] = ts[i];
        }
        ev += debounce(r, ts[i], &lvl[s], &pend[s], &since[s], 0.0, 0.0);
    }
    return ev;
}
long flatline(long n, const int *tag, const double *v, const double *ts, const uint8_t *q,
              long n_map, const int *slot, const double *eps, const double *dur, double *rv,
              double *rt, signed char *lvl, signed char *pend, double *since) {
    long ev = 0;
    for (long i = 0; i < n; i++) {
        int s = usable(i, tag, v, q, n_map, slot);
        if (s < 0) continue;
        signed char r = 0;
        if (isnan(rv[s]) || fabs(v[i] - rv[s]) > eps[s]) { rv[s] = v[i]; rt[s] = ts[i]; }
        else r = ts[i] - rt[s] >= dur[s];
        ev += debounce(r, ts[i], &lvl[s], &pend[s], &since[s], 0.0, 0.0);
    }
    return ev;
}
long sensor(long n, const int *tag, const double *v, const double *ts, const uint8_t *q,
            long n_map, const int *slot, const double *lo, const double *hi, signed char *lvl,
            signed char *pend, double *since) {
    long ev = 0;
    for (long i = 0; i < n; i++) {
        int t = tag[i];
        if (t < 0 || t >= n_map) continue;
        int s = slot[t];
        if (s < 0 || q[i] >= 3) continue;
        signed char r = isnan(v[i]) ? 2 : v[i] > hi[s] ? 1 : v[i] < lo[s] ? -1 : q[i] == 2 ? 2 : 0;
        ev += debounce(r, ts[i], &lvl[s], &pend[s], &since[s], 0.0, 0.0);
    }
    return ev;
}
/* robust: the window kept as a ring and sorted, median by index, MAD by walking the
 * deviations outwards from the median, as the kernel does */
static long first_ge(const double *a, long n, double x) {
    long lo = 0, hi = n;
    while (lo < hi) { long mid = (lo + hi) >> 1; if (a[mid] < x) lo = mid + 1; else hi = mid; }
    return lo;
}
static double kth_dev(const double *a, long n, double m, long k) {
    long left = first_ge(a, n, m) - 1, right = left + 1;
    double d = 0.0;
    for (long j = 0; j <= k; j++) {
        double dl = left >= 0 ? m - a[left] : INFINITY, dr = right < n ? a[right] - m : INFINITY;
        if (dl <= dr) { d = dl; left--; } else { d = dr; right++; }
    }
    return d;
}
long robust(long n, const int *tag, const double *v, const double *ts, const uint8_t *q,
            long n_map, const int *slot, long w, const double *thr, const double *minmad, double *ring, double *sorted,
            long *count, long *pos, signed char *lvl, signed char *pend, double *since) {
    long ev = 0;
    for (long i = 0; i < n; i++) {
        int s = usable(i, tag, v, q, n_map, slot);
        if (s < 0) continue;
        double *srt = sorted + s * w, *rg = ring + s * w, x = v[i];
        long c = count[s], j;
        signed char r = 0;
        if (c == w) {
            long half = w >> 1;
            double med = w & 1 ? srt[half] : 0.5 * (srt[half - 1] + srt[half]);
            double mad = w & 1 ? kth_dev(srt, w, med, half)
                               : 0.5 * (kth_dev(srt, w, med, half - 1) + kth_dev(srt, w, med, half));
            double scale = 1.4826 * mad, z = 0.0;
            if (scale < minmad[s]) scale = minmad[s];
            if (scale > 0.0) z = (x - med) / scale;
            else if (x != med) z = x > med ? INFINITY : -INFINITY;
            r = z > thr[s] ? 1 : (z < -thr[s] ? -1 : 0);
            j = first_ge(srt, c, rg[pos[s]]);
            memmove(srt + j, srt + j + 1, (c - j - 1) * sizeof(double));
            c--;
        }
        j = first_ge(srt, c, x);
        memmove(srt + j + 1, srt + j, (c - j) * sizeof(double));
        srt[j] = x;
        count[s] = c + 1;
        rg[pos[s]] = x;
        pos[s] = pos[s] + 1 < w ? pos[s] + 1 : 0;
        ev += debounce(r, ts[i], &lvl[s], &pend[s], &since[s], 0.0, 0.0);
    }
    return ev;
}
long limit(long n, const int *tag, const double *v, const double *ts, const uint8_t *q,
           long n_map, const int *slot, const double *hh, const double *h, const double *l,
           const double *ll, const double *db, signed char *raw, signed char *lvl,
           signed char *pend, double *since) {
    long ev = 0;
    for (long i = 0; i < n; i++) {
        int s = usable(i, tag, v, q, n_map, slot);
        if (s < 0) continue;
        signed char r = limit_raw(v[i], raw[s], hh[s], h[s], l[s], ll[s], db[s]);
        raw[s] = r;
        ev += debounce(r, ts[i], &lvl[s], &pend[s], &since[s], 2.0, 5.0);
    }
    return ev;
}

/* The floor of the whole-tick path: the kernels' vectorized passes (ext/_simd.h) called over
 * each whole tick from a plain C loop, the per-sample logic only for ticks a pass flags (rare
 * here), as the kernels do, without Python around it. */
#include "_simd.h"
static inline void settle(signed char r, double t, signed char *lvl, signed char *pend, double *since,
                          double *gate, double on, double off) {
    debounce(r, t, lvl, pend, since, on, off);
    *gate = *pend == *lvl ? (double)*lvl : NAN;
}
#define BLOCK 256 /* as the kernels: the per-sample logic runs over the flagged blocks only */
/* tag_of_slot NULL: the tags are a read plan checked before, as a family keeps its kernel's
 * plan for a frozen tag array */
static int whole(long n, const int *tag, const uint8_t *q, long m, const int *tag_of_slot) {
    return n % m == 0 && pw_max_quality(n, q) < 2 && (!tag_of_slot || pw_whole_ticks(n, tag, m, tag_of_slot));
}
/* ewma's quiet band from the gate, as the kernel's _band */
static void band(double g, double ucl, double lcl, double *qlo, double *qhi) {
    if (g == 0.0) { *qlo = nextafter(lcl, -INFINITY); *qhi = nextafter(ucl, INFINITY); }
    else if (g == 1.0) { *qlo = ucl; *qhi = INFINITY; }
    else if (g == -1.0) { *qlo = -INFINITY; *qhi = lcl; }
    else { *qlo = INFINITY; *qhi = -INFINITY; }
}
long ewma_ticks(long n, const int *tag, const double *v, const double *ts, const uint8_t *q, long m,
                const int *tag_of_slot, const double *lam, long one_lambda, double *z, const double *ucl,
                const double *lcl, double *qlo, double *qhi, double *gate, signed char *lvl,
                signed char *pend, double *since) {
    if (!whole(n, tag, q, m, tag_of_slot)) return -1;
    for (long j = 0; j < n; j += m) for (long b = 0; b < m; b += BLOCK) {
        long e = b + BLOCK < m ? b + BLOCK : m;
        int dirty = one_lambda ? pw_ewma_tick1(e - b, v + j + b, lam[0], z + b, qlo + b, qhi + b)
                               : pw_ewma_tick(e - b, v + j + b, lam + b, z + b, qlo + b, qhi + b);
        if (!dirty) continue;
        for (long s = b; s < e; s++) {
            if (isnan(v[j + s])) continue;
            signed char r = z[s] > ucl[s] ? 1 : (z[s] < lcl[s] ? -1 : 0);
            if (r != gate[s]) {
                settle(r, ts[j + s], &lvl[s], &pend[s], &since[s], &gate[s], 0.0, 0.0);
                band(gate[s], ucl[s], lcl[s], &qlo[s], &qhi[s]);
            }
        }
    }
    return 0;
}
long cusum_ticks(long n, const int *tag, const double *v, const double *ts, const uint8_t *q, long m,
                 const int *tag_of_slot, const double *mean, const double *isig, const double *k,
                 const double *h, double *sp, double *sn, double *gate, signed char *lvl,
                 signed char *pend, double *since) {
    if (!whole(n, tag, q, m, tag_of_slot)) return -1;
    for (long j = 0; j < n; j += m) for (long b = 0; b < m; b += BLOCK) {
        long e = b + BLOCK < m ? b + BLOCK : m;
        if (!pw_cusum_tick(e - b, v + j + b, mean + b, isig + b, k + b, h + b, sp + b, sn + b, gate + b)) continue;
        for (long s = b; s < e; s++) {
            if (isnan(v[j + s])) continue;
            signed char r = sp[s] > h[s] ? 1 : (sn[s] > h[s] ? -1 : 0);
            if (r) { sp[s] = 0; sn[s] = 0; }
            if (r != gate[s]) settle(r, ts[j + s], &lvl[s], &pend[s], &since[s], &gate[s], 0.0, 10.0);
        }
    }
    return 0;
}
long limit_ticks(long n, const int *tag, const double *v, const double *ts, const uint8_t *q, long m,
                 const int *tag_of_slot, const double *hh, const double *h, const double *l,
                 const double *ll, const double *db, const double *hi, const double *lo, double *gate,
                 signed char *raw, signed char *lvl, signed char *pend, double *since) {
    if (!whole(n, tag, q, m, tag_of_slot)) return -1;
    for (long j = 0; j < n; j += m) for (long b = 0; b < m; b += BLOCK) {
        long e = b + BLOCK < m ? b + BLOCK : m;
        if (!pw_limit_tick(e - b, v + j + b, hi + b, lo + b, gate + b)) continue;
        for (long s = b; s < e; s++) {
            if (isnan(v[j + s])) continue;
            signed char r = limit_raw(v[j + s], raw[s], hh[s], h[s], l[s], ll[s], db[s]);
            raw[s] = r;
            if (r != gate[s]) settle(r, ts[j + s], &lvl[s], &pend[s], &since[s], &gate[s], 2.0, 5.0);
        }
    }
    return 0;
}

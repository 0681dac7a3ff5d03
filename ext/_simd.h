/* Vectorized passes of the detection kernels' whole-tick path (ext/_kernels.pyx).
 *
 * When a batch is ticks of a run of consecutive slots (sample r of a tick belongs to slot
 * first + r), a tick's statistic update is an elementwise pass over the slot arrays; the
 * kernels run it over blocks of slots. Each pass also tells whether some slot of the block needs the per-sample
 * logic (raw level, debounce) for this sample. `gate` is each slot's reported level as
 * float64, NaN while a transition is pending: a slot needs nothing when its raw level equals
 * its gate, which is the per-sample loops' own skip test.
 *
 * Written so that gcc vectorizes them at -O3, on the SSE2 baseline too: float64 only (mixing
 * in the int8 levels or the uint8 qualities costs widening and narrowing shuffles), every
 * operand loaded and every store made unconditionally (a `cond ? new : old` store, or a load
 * inside a ?: arm, becomes a masked store or load, slow on some CPUs; a select of values is
 * a blend), no early exit, and the flag kept as a float64 set by a select (an integer flag
 * or-ed from double comparisons needs SSE4.1 to vectorize).
 *
 * Each pass computes what the per-sample loop computes, operation for operation, so both
 * give bit-identical state (setup.py passes -ffp-contract=off, so neither side fuses a
 * multiply-add where the other does not).
 *
 * On x86-64 with GCC and glibc each pass is built twice, for AVX2 and for the baseline, and
 * the dynamic loader picks one for the CPU at hand (target_clones dispatches through an
 * ifunc, hence glibc). Elsewhere they are plain functions, vectorized for the baseline
 * (SSE2 on x86-64, NEON on AArch64).
 */
#ifndef PW_SIMD_H
#define PW_SIMD_H

#include <math.h>
#include <stddef.h>
#include <stdint.h> /* on glibc, defines __GLIBC__ for the test below */

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__GLIBC__)
#define PW_SIMD __attribute__((target_clones("avx2", "default")))
#else
#define PW_SIMD
#endif

/* Nonzero when every tick of a batch of n samples (n a multiple of n_slots) lists the tags
 * of tag_of_slot in that order. */
PW_SIMD static int pw_whole_ticks(ptrdiff_t n, const int *restrict tag, ptrdiff_t n_slots,
                                  const int *restrict tag_of_slot) {
    for (ptrdiff_t j = 0; j < n; j += n_slots) {
        int diff = 0;
        for (ptrdiff_t s = 0; s < n_slots; s++)
            diff |= tag[j + s] ^ tag_of_slot[s];
        if (diff)
            return 0;
    }
    return 1;
}

/* The largest quality code among n samples. */
PW_SIMD static unsigned char pw_max_quality(ptrdiff_t n, const unsigned char *restrict q) {
    unsigned char m = 0;
    for (ptrdiff_t i = 0; i < n; i++)
        m = q[i] > m ? q[i] : m;
    return m;
}

/* limit: no state to update. A slot normal with nothing pending (gate 0) has a normal raw
 * level too (the debounce leaves pending equal to the last raw level), so it needs nothing
 * unless its value reaches the nearest limit it could enter (hi: the lowest high limit, lo:
 * the highest low limit, +-inf when unset). Nonzero when some slot is not such a slot. */
PW_SIMD static int pw_limit_tick(ptrdiff_t n, const double *restrict v, const double *restrict hi,
                                 const double *restrict lo, const double *restrict gate) {
    double dirty = 0.0;
    for (ptrdiff_t s = 0; s < n; s++) {
        double x = v[s];
        dirty = (x >= hi[s]) | (x <= lo[s]) | (gate[s] != 0.0) ? 1.0 : dirty;
    }
    return dirty != 0.0;
}

/* ewma: z = lam*x + (1-lam)*z for every slot; a NaN sample keeps z (selected back, since
 * lam*z + (1-lam)*z need not round to z). A slot's raw level stays equal to its gate while z
 * lies strictly inside its quiet band (qlo, qhi), which the kernel keeps from the gate and the
 * control limits; nonzero when some z lies outside. pw_ewma_tick1 is the same pass for a family
 * whose slots all have one lam (the common case): one array less to stream. */
PW_SIMD static int pw_ewma_tick(ptrdiff_t n, const double *restrict v, const double *restrict lam,
                                double *restrict z, const double *restrict qlo,
                                const double *restrict qhi) {
    double dirty = 0.0;
    for (ptrdiff_t s = 0; s < n; s++) {
        double x = v[s], zo = z[s], a = lam[s];
        double zn = a * x + (1.0 - a) * zo;   /* as the per-sample loop, to the bit */
        zn = isnan(x) ? zo : zn;
        z[s] = zn;
        dirty = (zn > qlo[s]) & (zn < qhi[s]) ? dirty : 1.0;
    }
    return dirty != 0.0;
}

PW_SIMD static int pw_ewma_tick1(ptrdiff_t n, const double *restrict v, double a, double *restrict z,
                                 const double *restrict qlo, const double *restrict qhi) {
    double dirty = 0.0, b = 1.0 - a;
    for (ptrdiff_t s = 0; s < n; s++) {
        double x = v[s], zo = z[s];
        double zn = a * x + b * zo;
        zn = isnan(x) ? zo : zn;
        z[s] = zn;
        dirty = (zn > qlo[s]) & (zn < qhi[s]) ? dirty : 1.0;
    }
    return dirty != 0.0;
}

/* cusum: x = (v - mean)*isig, S+ = max(S+ + x - k, 0), S- = max(S- - x - k, 0) for every
 * slot; a NaN sample keeps both sums. `a > 0 ? a : 0` is what the per-sample loop's maxsd
 * (or fmax elsewhere) gives, including 0 for NaN and +0 for -0. Nonzero when some sum is
 * above h (the per-sample logic then raises and restarts both sums of that slot) or some
 * slot's gate is not 0: without a crossing the raw level is 0. */
PW_SIMD static int pw_cusum_tick(ptrdiff_t n, const double *restrict v, const double *restrict mean,
                                 const double *restrict isig, const double *restrict k,
                                 const double *restrict h, double *restrict sp, double *restrict sn,
                                 const double *restrict gate) {
    double dirty = 0.0;
    for (ptrdiff_t s = 0; s < n; s++) {
        double y = v[s], po = sp[s], mo = sn[s], kk = k[s], hh = h[s];
        double x = (y - mean[s]) * isig[s];
        double p = po + x - kk, m = mo - x - kk;
        p = p > 0.0 ? p : 0.0;
        m = m > 0.0 ? m : 0.0;
        p = isnan(y) ? po : p;
        m = isnan(y) ? mo : m;
        sp[s] = p;
        sn[s] = m;
        dirty = (p > hh) | (m > hh) | (gate[s] != 0.0) ? 1.0 : dirty;
    }
    return dirty != 0.0;
}

#endif

/* Fused CPU kernels for RAA (float32), built on first use by dnrt_core/cpu_kernels.py.
 *
 * The input is viewed as (A, d, C): A independent groups, d features, C vectors per group
 * (C == 1: one feature vector per row, e.g. (B, T, d) with dim=-1; C > 1: a (B, C_feat, H, W)
 * map with dim=1, C = H·W). The shift of a vector is s = b + sum_k w_k x_k.
 *
 *   gelu (base 0): y = x·Phi(x + s)      relu (base 1): y = relu(x + s)
 *   silu (base 2): y = x·sigmoid(x + s)
 *
 * One pass reads each vector from memory once: its dot product, then its elementwise chain
 * while it is still in L1 (rows) or L2 (maps of one group). The backward does the same with
 * x, s and the incoming gradient g:
 *
 *   dL/dz_k  = gz_k        (gelu: g·x·phi(z); relu: g·1[z>0]; silu: g·x·sig·(1-sig))
 *   dL/ds    = sum_k gz_k
 *   dL/dx_k  = direct_k + gz_k + dL/ds · w_k   (direct: g·Phi(z), 0, g·sig(z))
 *   dL/dw_k  = sum over vectors of dL/ds · x_k
 *
 * With AVX-512 (built with -march=native on such a CPU) the loops use its intrinsics, and the
 * row forward is software-pipelined; elsewhere portable loops that the compiler vectorises.
 * Special functions are branch-free: exp by range reduction and a degree-6 minimax
 * polynomial; erfc(u) = t·Q(t)·exp(-u²), t = 1/(1 + 0.4u), with Q a degree-8 minimax fit of
 * erfcx(u)/t (relative error < 3e-7 in float32).
 */
#include <math.h>
#include <stdint.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define ALWAYS_INLINE static inline __attribute__((always_inline))
#define BASE_GELU 0
#define BASE_RELU 1
#define BASE_SILU 2

static const float INV_SQRT2 = 0.70710678118654752f;
static const float INV_SQRT2PI = 0.39894228040143268f;

static inline float exp_f(float a) {
    /* exp(a) for any float a: 0 below -87.33, +inf above 88.72 (relative error < 2e-7) */
    const float hi = 88.72283f, lo = -87.33654f;
    float c = a > hi ? hi : (a < lo ? lo : a);
    float n = rintf(c * 1.44269504088896341f);
    float r = c - n * 0.693145751953125f;
    r = r - n * 1.428606765330187e-06f;
    float p = 1.383684584e-03f;
    p = p * r + 8.374815804e-03f;
    p = p * r + 4.166822557e-02f;
    p = p * r + 1.666642017e-01f;
    p = p * r + 4.999999208e-01f;
    p = p * r + 1.000000036e+00f;
    p = p * r + 1.000000001e+00f;
    int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    float e = p * scale;
    e = a > hi ? INFINITY : e;
    return a < lo ? 0.0f : e;
}

static inline float erfcx_poly(float t) {
    /* erfc(u)·exp(u²)/t for t = 1/(1 + 0.4u), u >= 0 */
    float q = 5.025666782e-02f;
    q = q * t - 1.828818920e-01f;
    q = q * t + 1.690572548e-01f;
    q = q * t - 5.586714604e-03f;
    q = q * t + 1.414230517e-01f;
    q = q * t + 1.685437744e-01f;
    q = q * t + 2.078425139e-01f;
    q = q * t + 2.256696053e-01f;
    q = q * t + 2.256758619e-01f;
    return q;
}

/* Phi(z) and exp(-z²/2) (the latter is phi(z)·sqrt(2pi)) */
static inline float normal_cdf(float z, float *gauss) {
    float u = fabsf(z) * INV_SQRT2;
    float t = 1.0f / (1.0f + 0.4f * u);
    float e = exp_f(-u * u);
    float half_erfc = 0.5f * t * erfcx_poly(t) * e; /* = Phi(-|z|) */
    *gauss = e;
    return z >= 0.0f ? 1.0f - half_erfc : half_erfc;
}

static inline float sigmoid_f(float z) {
    float e = exp_f(-fabsf(z));
    float r = 1.0f / (1.0f + e);
    return z >= 0.0f ? r : e * r;
}

static inline float act_forward(int base, float x, float z) {
    float unused;
    if (base == BASE_GELU) return x * normal_cdf(z, &unused);
    if (base == BASE_RELU) return z < 0.0f ? 0.0f : z;
    return x * sigmoid_f(z);
}

/* direct term (dL/dx not through s) and gz = dL/dz of one element */
static inline float act_backward(int base, float x, float z, float g, float *gz) {
    if (base == BASE_GELU) {
        float gauss;
        float cdf = normal_cdf(z, &gauss);
        *gz = g * x * gauss * INV_SQRT2PI;
        return g * cdf;
    }
    if (base == BASE_RELU) {
        *gz = z > 0.0f ? g : 0.0f;
        return 0.0f;
    }
    float sig = sigmoid_f(z);
    *gz = g * x * sig * (1.0f - sig);
    return g * sig;
}

/* ------------------------------------------- portable loops (vectorised by the compiler) */

ALWAYS_INLINE void forward_rows_generic(int base, const float *x, const float *w, float b,
                                        float *y, float *s, int64_t i0, int64_t i1, int64_t d) {
    for (int64_t i = i0; i < i1; ++i) {
        const float *xi = x + i * d;
        float *yi = y + i * d;
        float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
        for (int64_t k = 0; k < d; ++k) acc += w[k] * xi[k];
        const float si = acc + b;
        s[i] = si;
#pragma omp simd
        for (int64_t k = 0; k < d; ++k) yi[k] = act_forward(base, xi[k], xi[k] + si);
    }
}

ALWAYS_INLINE void forward_maps_generic(int base, const float *x, const float *w, float b,
                                        float *y, float *s, int64_t a0, int64_t a1, int64_t d,
                                        int64_t C) {
    for (int64_t a = a0; a < a1; ++a) {
        const float *xa = x + a * d * C;
        float *ya = y + a * d * C;
        float *sa = s + a * C;
        for (int64_t p = 0; p < C; ++p) sa[p] = b;
        for (int64_t k = 0; k < d; ++k) {
            const float wk = w[k];
            const float *xk = xa + k * C;
#pragma omp simd
            for (int64_t p = 0; p < C; ++p) sa[p] += wk * xk[p];
        }
        for (int64_t k = 0; k < d; ++k) {
            const float *xk = xa + k * C;
            float *yk = ya + k * C;
#pragma omp simd
            for (int64_t p = 0; p < C; ++p) yk[p] = act_forward(base, xk[p], xk[p] + sa[p]);
        }
    }
}


ALWAYS_INLINE void backward_rows_generic(int base, const float *x, const float *s, const float *g,
                                         const float *w, float *gx, float *gs, float *gw,
                                         int64_t i0, int64_t i1, int64_t d) {
    for (int64_t i = i0; i < i1; ++i) {
        const float *xi = x + i * d, *gi = g + i * d;
        float *gxi = gx + i * d;
        const float si = s[i];
        float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
        for (int64_t k = 0; k < d; ++k) {
            float gz;
            float direct = act_backward(base, xi[k], xi[k] + si, gi[k], &gz);
            gxi[k] = direct + gz;
            acc += gz;
        }
        gs[i] = acc;
        if (gw) {
#pragma omp simd
            for (int64_t k = 0; k < d; ++k) {
                gxi[k] += acc * w[k];
                gw[k] += acc * xi[k];
            }
        } else {
#pragma omp simd
            for (int64_t k = 0; k < d; ++k) gxi[k] += acc * w[k];
        }
    }
}

ALWAYS_INLINE void backward_maps_generic(int base, const float *x, const float *s, const float *g,
                                         const float *w, float *gx, float *gs, float *gw,
                                         int64_t a0, int64_t a1, int64_t d, int64_t C) {
    for (int64_t a = a0; a < a1; ++a) {
        const float *xa = x + a * d * C, *ga = g + a * d * C, *sa = s + a * C;
        float *gxa = gx + a * d * C, *gsa = gs + a * C;
        for (int64_t p = 0; p < C; ++p) gsa[p] = 0.0f;
        for (int64_t k = 0; k < d; ++k) {
            const float *xk = xa + k * C, *gk = ga + k * C;
            float *gxk = gxa + k * C;
#pragma omp simd
            for (int64_t p = 0; p < C; ++p) {
                float gz;
                float direct = act_backward(base, xk[p], xk[p] + sa[p], gk[p], &gz);
                gxk[p] = direct + gz;
                gsa[p] += gz;
            }
        }
        for (int64_t k = 0; k < d; ++k) {
            const float wk = w[k];
            const float *xk = xa + k * C;
            float *gxk = gxa + k * C;
            float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
            for (int64_t p = 0; p < C; ++p) {
                gxk[p] += gsa[p] * wk;
                acc += gsa[p] * xk[p];
            }
            if (gw) gw[k] += acc;
        }
    }
}

/* --------------------------------------------------------------------------- AVX-512 */
#if defined(__AVX512F__)
#include <immintrin.h>

ALWAYS_INLINE __m512 v_set(float v) { return _mm512_set1_ps(v); }

ALWAYS_INLINE __m512 v_recip(__m512 v) { /* 1/v: rcp14 and one Newton step (~23 bits) */
    __m512 r = _mm512_rcp14_ps(v);
    return _mm512_mul_ps(r, _mm512_fnmadd_ps(v, r, v_set(2.0f)));
}

ALWAYS_INLINE __m512 v_exp_neg(__m512 a) { /* exp(a) for a <= 0 (NaN passes); 0 below -104 */
    a = _mm512_max_ps(v_set(-104.0f), a);
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(a, v_set(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, v_set(0.693145751953125f), a);
    r = _mm512_fnmadd_ps(n, v_set(1.428606765330187e-06f), r);
    __m512 p = v_set(1.383684584e-03f);
    p = _mm512_fmadd_ps(p, r, v_set(8.374815804e-03f));
    p = _mm512_fmadd_ps(p, r, v_set(4.166822557e-02f));
    p = _mm512_fmadd_ps(p, r, v_set(1.666642017e-01f));
    p = _mm512_fmadd_ps(p, r, v_set(4.999999208e-01f));
    p = _mm512_fmadd_ps(p, r, v_set(1.000000036e+00f));
    p = _mm512_fmadd_ps(p, r, v_set(1.000000001e+00f));
    return _mm512_scalef_ps(p, n);
}

ALWAYS_INLINE __m512 v_cdf(__m512 z, __m512 *gauss) { /* as normal_cdf */
    __m512 u = _mm512_mul_ps(_mm512_abs_ps(z), v_set(INV_SQRT2));
    __m512 t = v_recip(_mm512_fmadd_ps(u, v_set(0.4f), v_set(1.0f)));
    __m512 e = v_exp_neg(_mm512_mul_ps(_mm512_sub_ps(_mm512_setzero_ps(), u), u));
    __m512 q = v_set(5.025666782e-02f);
    q = _mm512_fmadd_ps(q, t, v_set(-1.828818920e-01f));
    q = _mm512_fmadd_ps(q, t, v_set(1.690572548e-01f));
    q = _mm512_fmadd_ps(q, t, v_set(-5.586714604e-03f));
    q = _mm512_fmadd_ps(q, t, v_set(1.414230517e-01f));
    q = _mm512_fmadd_ps(q, t, v_set(1.685437744e-01f));
    q = _mm512_fmadd_ps(q, t, v_set(2.078425139e-01f));
    q = _mm512_fmadd_ps(q, t, v_set(2.256696053e-01f));
    q = _mm512_fmadd_ps(q, t, v_set(2.256758619e-01f));
    __m512 h = _mm512_mul_ps(_mm512_mul_ps(v_set(0.5f), t), _mm512_mul_ps(q, e));
    *gauss = e;
    __mmask16 pos = _mm512_cmp_ps_mask(z, _mm512_setzero_ps(), _CMP_GE_OQ);
    return _mm512_mask_blend_ps(pos, h, _mm512_sub_ps(v_set(1.0f), h));
}

ALWAYS_INLINE __m512 v_sigmoid(__m512 z) {
    __m512 e = v_exp_neg(_mm512_sub_ps(_mm512_setzero_ps(), _mm512_abs_ps(z)));
    __m512 r = v_recip(_mm512_add_ps(v_set(1.0f), e));
    __mmask16 pos = _mm512_cmp_ps_mask(z, _mm512_setzero_ps(), _CMP_GE_OQ);
    return _mm512_mask_blend_ps(pos, _mm512_mul_ps(e, r), r);
}

ALWAYS_INLINE __m512 v_forward(int base, __m512 x, __m512 z) {
    if (base == BASE_GELU) {
        __m512 unused;
        return _mm512_mul_ps(x, v_cdf(z, &unused));
    }
    if (base == BASE_RELU) return _mm512_max_ps(_mm512_setzero_ps(), z);
    return _mm512_mul_ps(x, v_sigmoid(z));
}

ALWAYS_INLINE __m512 v_backward(int base, __m512 x, __m512 z, __m512 g, __m512 *gz) {
    if (base == BASE_GELU) {
        __m512 gauss;
        __m512 cdf = v_cdf(z, &gauss);
        *gz = _mm512_mul_ps(_mm512_mul_ps(g, x), _mm512_mul_ps(gauss, v_set(INV_SQRT2PI)));
        return _mm512_mul_ps(g, cdf);
    }
    if (base == BASE_RELU) {
        __mmask16 pos = _mm512_cmp_ps_mask(z, _mm512_setzero_ps(), _CMP_GT_OQ);
        *gz = _mm512_maskz_mov_ps(pos, g);
        return _mm512_setzero_ps();
    }
    __m512 sig = v_sigmoid(z);
    __m512 dsig = _mm512_mul_ps(sig, _mm512_sub_ps(v_set(1.0f), sig));
    *gz = _mm512_mul_ps(_mm512_mul_ps(g, x), dsig);
    return _mm512_mul_ps(g, sig);
}

ALWAYS_INLINE __mmask16 tail_mask(int64_t left) {
    return left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1u);
}

/* Rows, software-pipelined: while row i's elementwise chain runs (from L1), row i+1 streams
 * in from memory for its dot product, so the two overlap instead of taking turns. */
ALWAYS_INLINE void forward_rows_avx512(int base, const float *x, const float *w, float b, float *y,
                                       float *s, int64_t i0, int64_t i1, int64_t d) {
    if (i0 >= i1) return;
    __m512 acc = _mm512_setzero_ps();
    for (int64_t k = 0; k < d; k += 16) {
        __mmask16 m = tail_mask(d - k);
        acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, w + k),
                              _mm512_maskz_loadu_ps(m, x + i0 * d + k), acc);
    }
    float si = _mm512_reduce_add_ps(acc) + b;
    for (int64_t i = i0; i < i1; ++i) {
        const float *xi = x + i * d;
        const float *xn = i + 1 < i1 ? xi + d : xi; /* last row: a dummy product, discarded */
        float *yi = y + i * d;
        const __m512 sv = v_set(si);
        acc = _mm512_setzero_ps();
        int64_t k = 0;
        for (; k + 16 <= d; k += 16) {
            acc = _mm512_fmadd_ps(_mm512_loadu_ps(w + k), _mm512_loadu_ps(xn + k), acc);
            __m512 xv = _mm512_loadu_ps(xi + k);
            _mm512_storeu_ps(yi + k, v_forward(base, xv, _mm512_add_ps(xv, sv)));
        }
        if (k < d) {
            __mmask16 m = tail_mask(d - k);
            acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, w + k), _mm512_maskz_loadu_ps(m, xn + k),
                                  acc);
            __m512 xv = _mm512_maskz_loadu_ps(m, xi + k);
            _mm512_mask_storeu_ps(yi + k, m, v_forward(base, xv, _mm512_add_ps(xv, sv)));
        }
        s[i] = si;
        si = _mm512_reduce_add_ps(acc) + b;
    }
}

ALWAYS_INLINE void backward_rows_avx512(int base, const float *x, const float *s, const float *g,
                                        const float *w, float *gx, float *gs, float *gw,
                                        int64_t i0, int64_t i1, int64_t d) {
    for (int64_t i = i0; i < i1; ++i) {
        const float *xi = x + i * d, *gi = g + i * d;
        float *gxi = gx + i * d;
        const __m512 sv = v_set(s[i]);
        __m512 acc = _mm512_setzero_ps();
        for (int64_t k = 0; k < d; k += 16) {
            __mmask16 m = tail_mask(d - k);
            __m512 xv = _mm512_maskz_loadu_ps(m, xi + k), gv = _mm512_maskz_loadu_ps(m, gi + k);
            __m512 gz;
            __m512 direct = v_backward(base, xv, _mm512_add_ps(xv, sv), gv, &gz);
            _mm512_mask_storeu_ps(gxi + k, m, _mm512_add_ps(direct, gz));
            acc = _mm512_add_ps(acc, _mm512_maskz_mov_ps(m, gz));
        }
        const float gsi = _mm512_reduce_add_ps(acc);
        gs[i] = gsi;
        const __m512 gsv = v_set(gsi);
        for (int64_t k = 0; k < d; k += 16) {
            __mmask16 m = tail_mask(d - k);
            __m512 gxv = _mm512_maskz_loadu_ps(m, gxi + k);
            _mm512_mask_storeu_ps(gxi + k, m,
                                  _mm512_fmadd_ps(gsv, _mm512_maskz_loadu_ps(m, w + k), gxv));
            if (gw) {
                __m512 gwv = _mm512_maskz_loadu_ps(m, gw + k);
                gwv = _mm512_fmadd_ps(gsv, _mm512_maskz_loadu_ps(m, xi + k), gwv);
                _mm512_mask_storeu_ps(gw + k, m, gwv);
            }
        }
    }
}
/* Maps of one group (d, C): the shift of C vectors accumulates over the d channel rows, then
 * the elementwise pass reads the group again from L2. */
ALWAYS_INLINE void forward_maps_avx512(int base, const float *x, const float *w, float b,
                                       float *y, float *s, int64_t a0, int64_t a1, int64_t d,
                                       int64_t C) {
    for (int64_t a = a0; a < a1; ++a) {
        const float *xa = x + a * d * C;
        float *ya = y + a * d * C, *sa = s + a * C;
        for (int64_t p = 0; p < C; p += 16) {
            __mmask16 m = tail_mask(C - p);
            __m512 acc = v_set(b);
            for (int64_t k = 0; k < d; ++k)
                acc = _mm512_fmadd_ps(v_set(w[k]), _mm512_maskz_loadu_ps(m, xa + k * C + p), acc);
            _mm512_mask_storeu_ps(sa + p, m, acc);
        }
        for (int64_t k = 0; k < d; ++k) {
            const float *xk = xa + k * C;
            float *yk = ya + k * C;
            for (int64_t p = 0; p < C; p += 16) {
                __mmask16 m = tail_mask(C - p);
                __m512 xv = _mm512_maskz_loadu_ps(m, xk + p);
                __m512 zv = _mm512_add_ps(xv, _mm512_maskz_loadu_ps(m, sa + p));
                _mm512_mask_storeu_ps(yk + p, m, v_forward(base, xv, zv));
            }
        }
    }
}

ALWAYS_INLINE void backward_maps_avx512(int base, const float *x, const float *s, const float *g,
                                        const float *w, float *gx, float *gs, float *gw,
                                        int64_t a0, int64_t a1, int64_t d, int64_t C) {
    for (int64_t a = a0; a < a1; ++a) {
        const float *xa = x + a * d * C, *ga = g + a * d * C, *sa = s + a * C;
        float *gxa = gx + a * d * C, *gsa = gs + a * C;
        for (int64_t p = 0; p < C; ++p) gsa[p] = 0.0f;
        for (int64_t k = 0; k < d; ++k) {
            const float *xk = xa + k * C, *gk = ga + k * C;
            float *gxk = gxa + k * C;
            for (int64_t p = 0; p < C; p += 16) {
                __mmask16 m = tail_mask(C - p);
                __m512 xv = _mm512_maskz_loadu_ps(m, xk + p), gv = _mm512_maskz_loadu_ps(m, gk + p);
                __m512 zv = _mm512_add_ps(xv, _mm512_maskz_loadu_ps(m, sa + p));
                __m512 gz;
                __m512 direct = v_backward(base, xv, zv, gv, &gz);
                _mm512_mask_storeu_ps(gxk + p, m, _mm512_add_ps(direct, gz));
                __m512 gsv = _mm512_add_ps(_mm512_maskz_loadu_ps(m, gsa + p), gz);
                _mm512_mask_storeu_ps(gsa + p, m, gsv);
            }
        }
        for (int64_t k = 0; k < d; ++k) {
            const __m512 wk = v_set(w[k]);
            const float *xk = xa + k * C;
            float *gxk = gxa + k * C;
            __m512 acc = _mm512_setzero_ps();
            for (int64_t p = 0; p < C; p += 16) {
                __mmask16 m = tail_mask(C - p);
                __m512 gsv = _mm512_maskz_loadu_ps(m, gsa + p);
                __m512 gxv = _mm512_fmadd_ps(gsv, wk, _mm512_maskz_loadu_ps(m, gxk + p));
                _mm512_mask_storeu_ps(gxk + p, m, gxv);
                acc = _mm512_fmadd_ps(gsv, _mm512_maskz_loadu_ps(m, xk + p), acc);
            }
            if (gw) gw[k] += _mm512_reduce_add_ps(acc);
        }
    }
}
#define FORWARD_ROWS forward_rows_avx512
#define BACKWARD_ROWS backward_rows_avx512
#define FORWARD_MAPS forward_maps_avx512
#define BACKWARD_MAPS backward_maps_avx512
#else
#define FORWARD_ROWS forward_rows_generic
#define BACKWARD_ROWS backward_rows_generic
#define FORWARD_MAPS forward_maps_generic
#define BACKWARD_MAPS backward_maps_generic
#endif

/* --------------------------------------------------------------------------- entry points */

/* Inside a parallel region: this thread's contiguous share [lo, hi) of A groups; returns the
 * thread's index (static split, so results do not depend on scheduling). */
static inline int64_t thread_share(int64_t A, int64_t *lo, int64_t *hi) {
#ifdef _OPENMP
    const int64_t tid = omp_get_thread_num(), nt = omp_get_num_threads();
#else
    const int64_t tid = 0, nt = 1;
#endif
    *lo = A * tid / nt;
    *hi = A * (tid + 1) / nt;
    return tid;
}

/* x (A, d, C) -> y (A, d, C) and the shift s (A, C) */
void dnrt_raa_forward(int base, const float *x, const float *w, float b, float *y, float *s,
                      int64_t A, int64_t d, int64_t C, int nthreads) {
#pragma omp parallel num_threads(nthreads) if (nthreads > 1)
    {
        int64_t lo, hi;
        thread_share(A, &lo, &hi);
        /* constant bases: each call is inlined and specialised (no per-element branch) */
        if (C == 1) {
            if (base == BASE_GELU) FORWARD_ROWS(BASE_GELU, x, w, b, y, s, lo, hi, d);
            else if (base == BASE_RELU) FORWARD_ROWS(BASE_RELU, x, w, b, y, s, lo, hi, d);
            else FORWARD_ROWS(BASE_SILU, x, w, b, y, s, lo, hi, d);
        } else {
            if (base == BASE_GELU) FORWARD_MAPS(BASE_GELU, x, w, b, y, s, lo, hi, d, C);
            else if (base == BASE_RELU) FORWARD_MAPS(BASE_RELU, x, w, b, y, s, lo, hi, d, C);
            else FORWARD_MAPS(BASE_SILU, x, w, b, y, s, lo, hi, d, C);
        }
    }
}

/* grad_x (A, d, C), grad_s (A, C); gw: (nthreads, d) zeroed partial sums of dL/dw, or NULL */
void dnrt_raa_backward(int base, const float *x, const float *s, const float *g, const float *w,
                       float *gx, float *gs, float *gw, int64_t A, int64_t d, int64_t C,
                       int nthreads) {
#pragma omp parallel num_threads(nthreads) if (nthreads > 1)
    {
        int64_t lo, hi;
        const int64_t tid = thread_share(A, &lo, &hi);
        float *gw_t = gw ? gw + tid * d : 0;
        if (C == 1) {
            if (base == BASE_GELU) BACKWARD_ROWS(BASE_GELU, x, s, g, w, gx, gs, gw_t, lo, hi, d);
            else if (base == BASE_RELU)
                BACKWARD_ROWS(BASE_RELU, x, s, g, w, gx, gs, gw_t, lo, hi, d);
            else BACKWARD_ROWS(BASE_SILU, x, s, g, w, gx, gs, gw_t, lo, hi, d);
        } else {
            if (base == BASE_GELU)
                BACKWARD_MAPS(BASE_GELU, x, s, g, w, gx, gs, gw_t, lo, hi, d, C);
            else if (base == BASE_RELU)
                BACKWARD_MAPS(BASE_RELU, x, s, g, w, gx, gs, gw_t, lo, hi, d, C);
            else
                BACKWARD_MAPS(BASE_SILU, x, s, g, w, gx, gs, gw_t, lo, hi, d, C);
        }
    }
}

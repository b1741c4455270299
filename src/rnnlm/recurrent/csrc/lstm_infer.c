/* One sequence (batch 1) through one LSTM layer and direction, every step in one call, for inference.
 *
 * At batch 1 a step's recurrent product h W_hh^T is a matrix-vector product, and through torch each step
 * costs an operator call whose fixed cost (and oneDNN's, about 100 us at H = 448 on a shared Zen 4) is
 * several times its arithmetic. Here the whole recurrence of one layer and direction runs in one loop; the
 * input projection x W_ih^T + b of every step is computed before, by the caller, as one matrix product.
 *
 * Arithmetic: that of recurrent/sequence_fns.py's LSTMSequence with the pointwise steps of lstm_step.c
 * (the same sigmoid and tanh, fastmath.h): gates in torch's order i, f, g, o; c = f c + i g; h = o tanh(c).
 * With bf16 the weight comes as bfloat16 bits and h is rounded to bfloat16 (to nearest even) before each
 * product, as the bfloat16 matmuls of the reference do; every product of two bfloat16 values is exact in
 * float32 and the sums are float32, so the result differs from oneDNN's only in the order of the sums.
 *
 * Layouts (row-major, contiguous, float32 unless said): A (T, 4H) the projected inputs with the bias,
 * overwritten with the gate activations; W (H, 4H) = W_hh^T, float32 or bfloat16 bits; h, c (H) the
 * initial state, left holding the final one; work (6H) scratch; out (T, H) every step's h, in time order
 * (a reverse pass reads step T-1 first and still writes step t's h at row t).
 * The caller (recurrent/one_sequence.py) checks dtypes, shapes and contiguity; nothing is checked here.
 */
#include <stdint.h>
#include <string.h>

#include "fastmath.h"

#if defined(__AVX512BF16__) && defined(__AVX512F__)
#include <immintrin.h>
#define HAVE_DPBF16 1
#else
#define HAVE_DPBF16 0
#endif

/* 1 where this build multiplies bfloat16 pairs with AVX512-BF16 (vdpbf16ps): the caller then hands W in pairs of
 * rows, (H/2, 4H, 2), for bf16 = 2. */
int lstm_infer_pairs(void) { return HAVE_DPBF16; }

static inline float from_bf16(uint16_t b) {
    union { uint32_t i; float f; } u = {.i = (uint32_t)b << 16};
    return u.f;
}

static inline float round_bf16(float x) {
    union { float f; uint32_t i; } u = {.f = x};
    if ((u.i & 0x7fffffffu) > 0x7f800000u) return x; /* NaN stays NaN */
    u.i = (u.i + 0x7fffu + ((u.i >> 16) & 1u)) & 0xffff0000u;
    return u.f;
}

/* out (n) = x (k) @ W (k, n): four rows of W per pass over out, which stays in L1. */
static void matvec_f32(float *restrict out, const float *restrict x, const float *restrict W, int64_t k, int64_t n) {
    memset(out, 0, (size_t)n * sizeof(float));
    int64_t i = 0;
    for (; i + 4 <= k; i += 4) {
        const float x0 = x[i], x1 = x[i + 1], x2 = x[i + 2], x3 = x[i + 3];
        const float *w0 = W + i * n, *w1 = w0 + n, *w2 = w1 + n, *w3 = w2 + n;
        for (int64_t j = 0; j < n; j++) out[j] += x0 * w0[j] + x1 * w1[j] + x2 * w2[j] + x3 * w3[j];
    }
    for (; i < k; i++) {
        const float xi = x[i];
        const float *w = W + i * n;
        for (int64_t j = 0; j < n; j++) out[j] += xi * w[j];
    }
}

static void matvec_bf16(float *restrict out, const float *restrict x, const uint16_t *restrict W, int64_t k, int64_t n) {
    memset(out, 0, (size_t)n * sizeof(float));
    int64_t i = 0;
    for (; i + 4 <= k; i += 4) {
        const float x0 = x[i], x1 = x[i + 1], x2 = x[i + 2], x3 = x[i + 3];
        const uint16_t *w0 = W + i * n, *w1 = w0 + n, *w2 = w1 + n, *w3 = w2 + n;
        for (int64_t j = 0; j < n; j++)
            out[j] += x0 * from_bf16(w0[j]) + x1 * from_bf16(w1[j]) + x2 * from_bf16(w2[j]) + x3 * from_bf16(w3[j]);
    }
    for (; i < k; i++) {
        const float xi = x[i];
        const uint16_t *w = W + i * n;
        for (int64_t j = 0; j < n; j++) out[j] += xi * from_bf16(w[j]);
    }
}

#if HAVE_DPBF16
/* out (n) = x (k) @ W with x already rounded to bfloat16 and W in pairs of rows (k/2, n, 2); k even, n a multiple
 * of 16. vdpbf16ps adds both exact products of a pair to each float32 lane (denormals read and written as zero). */
static void matvec_pairs(float *restrict out, const float *restrict x, const uint16_t *restrict W, int64_t k,
                         int64_t n, uint32_t *restrict xp) {
    for (int64_t p = 0; p < k / 2; p++) {
        union { float f; uint32_t i; } lo = {.f = x[2 * p]}, hi = {.f = x[2 * p + 1]};
        xp[p] = (lo.i >> 16) | (hi.i & 0xffff0000u);
    }
    memset(out, 0, (size_t)n * sizeof(float));
    int64_t p = 0;
    for (; p + 2 <= k / 2; p += 2) {
        const __m512bh a0 = (__m512bh)_mm512_set1_epi32((int)xp[p]), a1 = (__m512bh)_mm512_set1_epi32((int)xp[p + 1]);
        const uint16_t *w0 = W + p * n * 2, *w1 = w0 + n * 2;
        for (int64_t j = 0; j < n; j += 16) {
            __m512 acc = _mm512_loadu_ps(out + j);
            acc = _mm512_dpbf16_ps(acc, (__m512bh)_mm512_loadu_si512(w0 + 2 * j), a0);
            acc = _mm512_dpbf16_ps(acc, (__m512bh)_mm512_loadu_si512(w1 + 2 * j), a1);
            _mm512_storeu_ps(out + j, acc);
        }
    }
    for (; p < k / 2; p++) {
        const __m512bh a = (__m512bh)_mm512_set1_epi32((int)xp[p]);
        const uint16_t *w = W + p * n * 2;
        for (int64_t j = 0; j < n; j += 16)
            _mm512_storeu_ps(out + j, _mm512_dpbf16_ps(_mm512_loadu_ps(out + j), (__m512bh)_mm512_loadu_si512(w + 2 * j), a));
    }
}
#endif

static void cell(int64_t H, float *restrict ri, float *restrict rf, float *restrict rg, float *restrict ro,
                 const float *restrict pi, const float *restrict pf, const float *restrict pg,
                 const float *restrict po, float *restrict c, float *restrict h, float *restrict out) {
    for (int64_t j = 0; j < H; j++) {
        const float i = sigmoid_f32(ri[j] + pi[j]), f = sigmoid_f32(rf[j] + pf[j]);
        const float g = tanh_f32(rg[j] + pg[j]), o = sigmoid_f32(ro[j] + po[j]);
        ri[j] = i;
        rf[j] = f;
        rg[j] = g;
        ro[j] = o;
        const float cn = f * c[j] + i * g;
        c[j] = cn;
        h[j] = o * tanh_f32(cn);
        out[j] = h[j];
    }
}

void lstm_infer_sequence(int64_t T, int64_t H, float *A, const void *W, int bf16, float *h, float *c, float *work,
                         float *out, int reverse) {
    float *product = work, *hx = work + 4 * H;
    for (int64_t s = 0; s < T; s++) {
        const int64_t t = reverse ? T - 1 - s : s;
        float *g = A + t * 4 * H;
        if (bf16) {
            for (int64_t j = 0; j < H; j++) hx[j] = round_bf16(h[j]);
#if HAVE_DPBF16
            if (bf16 == 2) {
                matvec_pairs(product, hx, (const uint16_t *)W, H, 4 * H, (uint32_t *)(work + 5 * H));
                goto step;
            }
#endif
            matvec_bf16(product, hx, (const uint16_t *)W, H, 4 * H);
        } else {
            matvec_f32(product, h, (const float *)W, H, 4 * H);
        }
#if HAVE_DPBF16
    step:
#endif
        cell(H, g, g + H, g + 2 * H, g + 3 * H, product, product + H, product + 2 * H, product + 3 * H, c, h,
             out + t * H);
    }
}

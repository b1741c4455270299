/* exp, sigmoid and tanh for float32 without calls or branches, so that loops over them vectorize.
 * Shared by the kernels in this folder (recurrent/native.py builds each .c file with the headers beside it). */
#ifndef RNNLM_FASTMATH_H
#define RNNLM_FASTMATH_H

#include <stdint.h>

/* exp(x) for float32 by range reduction to [-ln2/2, ln2/2] and a degree-6 polynomial,
 * written without calls or branches so that the loops over it vectorize (within 1.5 ulp of exp from
 * -87 to 88). 0 below -87.3. */
static inline float exp_f32(float x) {
    const float hi = 88.3762626647949f, lo = -87.3365478515625f, round = 12582912.0f; /* 1.5 * 2^23 */
    float xc = x > hi ? hi : x;
    xc = xc < lo ? lo : xc;
    const float n = (xc * 1.44269504088896341f + round) - round; /* round to nearest, |n| < 128 */
    float r = xc - n * 0.693359375f;
    r = r + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    union { int32_t i; float f; } scale = {.i = ((int32_t)n + 127) << 23};
    return x < lo ? 0.0f : p * scale.f;
}

static inline float sigmoid_f32(float x) { return 1.0f / (1.0f + exp_f32(-x)); }

/* tanh(x) = 1 - 2 / (exp(2x) + 1): exact limits at both ends, absolute error a few 1e-8 near 0. */
static inline float tanh_f32(float x) { return 1.0f - 2.0f / (exp_f32(2.0f * x) + 1.0f); }

#endif

/* The pointwise work of one LSTM time step, forward and backward, for the cpu engine
 * (recurrent/sequence_fns.py, LSTMSequence): one call per step in place of about fifteen torch operators
 * forward and six backward, whose dispatch costs more than their arithmetic at these sizes.
 *
 * The arithmetic is LSTMSequence's, in float32: gates in torch's order i, f, g, o, laid out (B, 4H);
 * states (B, H); every array row-major and contiguous. The recurrent product h W_hh^T (forward) or
 * d W_hh (backward) stays with oneDNN; it comes in as float32 or, for bfloat16 matmuls, as bfloat16,
 * and the kernels write the bfloat16 operand of the next product themselves (round to nearest even).
 * The caller (sequence_fns.LSTMSequence, through _native_lstm) checks dtypes and contiguity; nothing is
 * checked here.
 */
#include <stdint.h>

#include "fastmath.h"

static inline float from_bf16(uint16_t b) {
    union { uint32_t i; float f; } u = {.i = (uint32_t)b << 16};
    return u.f;
}

static inline uint16_t to_bf16(float x) {
    union { float f; uint32_t i; } u = {.f = x};
    const uint32_t rounded = (u.i + 0x7fffu + ((u.i >> 16) & 1u)) >> 16;
    const uint32_t nan = (u.i >> 16) | 0x40u; /* a quiet NaN stays a NaN instead of rounding to infinity */
    return (uint16_t)((u.i & 0x7fffffffu) > 0x7f800000u ? nan : rounded);
}

/* out (n) += the product row (n), float32 or bfloat16. */
static inline void add_product(float *restrict out, const void *product, int bf16, int64_t n) {
    if (bf16) {
        const uint16_t *p = (const uint16_t *)product;
        for (int64_t j = 0; j < n; j++) out[j] += from_bf16(p[j]);
    } else {
        const float *p = (const float *)product;
        for (int64_t j = 0; j < n; j++) out[j] += p[j];
    }
}

/* One row of the forward step: the gates activated in place, then c, tanh(c) and h. One restrict pointer
 * per gate block, so that the compiler knows the blocks apart and vectorizes. */
static void cell_row(int64_t H, float *restrict ri, float *restrict rf, float *restrict rg, float *restrict ro,
                     const float *restrict cp, float *restrict cr, float *restrict tr, float *restrict hr) {
    for (int64_t j = 0; j < H; j++) {
        const float i = sigmoid_f32(ri[j]), f = sigmoid_f32(rf[j]), g = tanh_f32(rg[j]), o = sigmoid_f32(ro[j]);
        ri[j] = i;
        rf[j] = f;
        rg[j] = g;
        ro[j] = o;
        const float cn = f * cp[j] + i * g, t = tanh_f32(cn);
        cr[j] = cn;
        tr[j] = t;
        hr[j] = o * t;
    }
}

/* One row of the backward step, gh already summed. */
static void back_row(int64_t H, float *restrict pi, float *restrict pf, float *restrict pg, float *restrict po,
                     float *restrict dc, const float *restrict gh, const float *restrict q, const float *restrict f) {
    for (int64_t j = 0; j < H; j++) {
        const float dcn = dc[j] + gh[j] * q[j];
        pi[j] *= dcn;
        pf[j] *= dcn;
        pg[j] *= dcn;
        po[j] *= gh[j];
        dc[j] = dcn * f[j];
    }
}

/* a (B, 4H): the step's input projection x_t W_ih^T + b on entry, the activated gates i, f, g, o on exit,
 * after adding product = h_{t-1} W_hh^T (B, 4H). c_prev (B, H) -> c, tc = tanh(c), h = o tc (B, H), and
 * h_mm (B, H), h in bfloat16 for the next step's product, unless NULL. */
void lstm_forward_step(int64_t B, int64_t H, float *a, const void *product, int product_bf16, const float *c_prev,
                       float *c, float *tc, float *h, uint16_t *h_mm) {
    for (int64_t b = 0; b < B; b++) {
        float *restrict row = a + b * 4 * H;
        add_product(row, (const char *)product + b * 4 * H * (product_bf16 ? 2 : 4), product_bf16, 4 * H);
        cell_row(H, row, row + H, row + 2 * H, row + 3 * H, c_prev + b * H, c + b * H, tc + b * H, h + b * H);
        if (h_mm)
            for (int64_t j = 0; j < H; j++) h_mm[b * H + j] = to_bf16(h[b * H + j]);
    }
}

/* One step back through the cell. gh = gh_base + product (B, H; product NULL: gh_base alone) is the
 * gradient reaching h_t; dc (B, H) the one reaching c_t, carried to c_{t-1} in place. p (B, 4H) holds the
 * factors P_i, P_f, P_g, P_o on entry and the gate pre-activation gradients on exit:
 *   dc += gh q_c;  p_o *= gh;  p_i, p_f, p_g *= dc;  dc *= f.
 * d (B, 4H), p in bfloat16 for the product with W_hh, unless NULL. scratch: room for H floats. */
void lstm_backward_step(int64_t B, int64_t H, const float *gh_base, const void *product, int product_bf16,
                        const float *q_c, float *p, float *dc, const float *f, uint16_t *d, float *scratch) {
    for (int64_t b = 0; b < B; b++) {
        float *restrict row = p + b * 4 * H, *restrict dcr = dc + b * H;
        const float *restrict base = gh_base + b * H, *restrict q = q_c + b * H, *restrict fr = f + b * H;
        float *restrict gh = scratch;
        for (int64_t j = 0; j < H; j++) gh[j] = base[j];
        if (product) add_product(gh, (const char *)product + b * H * (product_bf16 ? 2 : 4), product_bf16, H);
        back_row(H, row, row + H, row + 2 * H, row + 3 * H, dcr, gh, q, fr);
        if (d)
            for (int64_t j = 0; j < 4 * H; j++) d[b * 4 * H + j] = to_bf16(row[j]);
    }
}

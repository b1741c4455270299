/* One-row generation for recurrent language models: a chunk of steps and draws in one call.
 *
 * At batch 1 a generation step is a few small matrix-vector products, and in eager torch each of
 * its ~20 operator calls costs more than its arithmetic. Here the whole step runs in one loop: the
 * input row (an embedding row, or for one-hot input the precomputed row of W_ih^T + b), every layer's
 * cell, the output layer, and the draw. The arithmetic and the draw are those of
 * lm/decoder.py and lm/generate.py: float32 weights and state, the draw by inverting the
 * cumulative distribution (float64) with one uniform per step, greedy when temperature is 0.
 * The caller (lm/decoder.py, NativeDecoder) checks token ids and shapes; nothing is checked here.
 *
 * Layouts (all row-major float32, as lm/decoder.py keeps them):
 *   embedding (V, E) or NULL; rows (V, G*H) or NULL (one-hot input);
 *   per layer: w_ih (in, G*H) [layer 0 unused with rows], bias (G*H), w_hh (H, G*H),
 *              b_hn (G*H) for the GRU (zeros then the candidate's b_hn), else NULL;
 *   head_w (H, V), head_b (V); h and c (layers, H), updated in place.
 * Gate order: rnn -; gru r, z, n; lstm i, f, g, o (torch's).
 */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fastmath.h"

enum { CELL_RNN = 0, CELL_GRU = 1, CELL_LSTM = 2 };
enum { DIM_CELL, DIM_LAYERS, DIM_HIDDEN, DIM_VOCAB, DIM_EMBED, N_DIMS };
enum { PTR_EMBEDDING, PTR_ROWS, PTR_HEAD_W, PTR_HEAD_B, N_PTRS };
enum { LAYER_W_IH, LAYER_BIAS, LAYER_W_HH, LAYER_B_HN, N_LAYER_PTRS };

/* out (n) += x (k) @ W (k, n), W row-major: four rows of W per pass over out, which stays in L1. */
static void add_matvec(float *restrict out, const float *restrict x, const float *restrict W, int64_t k, int64_t n) {
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

/* The index the draw picks from logits (v): argmax (first on ties) when temperature is 0, else the
 * first index whose cumulative mass of softmax(logits / temperature) exceeds u times the total.
 * -1 where the logits give no distribution: a NaN among them, or when sampling a total that is not a
 * positive finite number (a +inf logit, or all -inf); generate.sample_next refuses the same logits. */
static int64_t draw(const float *restrict logits, float *restrict scratch, int64_t v, double temperature, double u) {
    int nan = 0;
    for (int64_t j = 0; j < v; j++) nan |= logits[j] != logits[j];
    if (nan) return -1;
    /* The largest logit over 16 lanes (so that it vectorizes), then its first index. */
    float lane_max[16];
    for (int k = 0; k < 16; k++) lane_max[k] = logits[0];
    int64_t j = 0;
    for (; j + 16 <= v; j += 16)
        for (int k = 0; k < 16; k++) lane_max[k] = logits[j + k] > lane_max[k] ? logits[j + k] : lane_max[k];
    float m = lane_max[0];
    for (int k = 1; k < 16; k++) m = lane_max[k] > m ? lane_max[k] : m;
    for (; j < v; j++) m = logits[j] > m ? logits[j] : m;
    int64_t best = 0;
    while (best < v - 1 && logits[best] != m) best++;
    if (temperature == 0.0) return best;
    if (!(m > -INFINITY && m < INFINITY)) return -1; /* +inf, or every logit -inf: softmax is NaN */
    const float t = (float)temperature, shift = m / t;
    for (int64_t j = 0; j < v; j++) scratch[j] = exp_f32(logits[j] / t - shift);
    /* The total in float64 over 8 lanes (lane k sums indices = k mod 8), so that it vectorizes. */
    double lanes[8] = {0};
    for (j = 0; j + 8 <= v; j += 8)
        for (int k = 0; k < 8; k++) lanes[k] += scratch[j + k];
    double total = 0.0;
    for (; j < v; j++) total += scratch[j];
    for (int k = 0; k < 8; k++) total += lanes[k];
    if (!(total > 0.0 && total <= DBL_MAX)) return -1; /* what overflows at a tiny temperature; NaN fails both */
    const double target = u * total;
    double mass = 0.0;
    for (j = 0; j < v; j++) {
        mass += scratch[j];
        if (mass > target) return j;
    }
    return v - 1; /* the cumulative sum fell short of u * total by rounding */
}

/* Advance every layer by one input token; leaves the top layer's new h in h + (layers-1)*H. */
static void step(const int64_t *dims, const float *const *ptrs, const float *const *layer_ptrs, float *h, float *c,
                 float *gates, float *hidden_part, int64_t token) {
    const int64_t cell = dims[DIM_CELL], layers = dims[DIM_LAYERS], H = dims[DIM_HIDDEN], E = dims[DIM_EMBED];
    const int64_t G = cell == CELL_LSTM ? 4 : cell == CELL_GRU ? 3 : 1;
    const float *x = ptrs[PTR_EMBEDDING] ? ptrs[PTR_EMBEDDING] + token * E : NULL;
    int64_t in_dim = E;
    for (int64_t l = 0; l < layers; l++) {
        const float *const *lp = layer_ptrs + l * N_LAYER_PTRS;
        float *hl = h + l * H;
        if (l == 0 && x == NULL) {
            memcpy(gates, ptrs[PTR_ROWS] + token * G * H, (size_t)(G * H) * sizeof(float));
        } else {
            memcpy(gates, lp[LAYER_BIAS], (size_t)(G * H) * sizeof(float));
            add_matvec(gates, x, lp[LAYER_W_IH], in_dim, G * H);
        }
        if (cell == CELL_RNN) {
            add_matvec(gates, hl, lp[LAYER_W_HH], H, H);
            for (int64_t j = 0; j < H; j++) hl[j] = tanh_f32(gates[j]);
        } else if (cell == CELL_GRU) {
            memcpy(hidden_part, lp[LAYER_B_HN], (size_t)(3 * H) * sizeof(float));
            add_matvec(hidden_part, hl, lp[LAYER_W_HH], H, 3 * H);
            for (int64_t j = 0; j < H; j++) {
                const float r = sigmoid_f32(gates[j] + hidden_part[j]);
                const float z = sigmoid_f32(gates[H + j] + hidden_part[H + j]);
                const float n = tanh_f32(gates[2 * H + j] + r * hidden_part[2 * H + j]);
                hl[j] = n + z * (hl[j] - n);
            }
        } else {
            add_matvec(gates, hl, lp[LAYER_W_HH], H, 4 * H);
            float *cl = c + l * H;
            for (int64_t j = 0; j < H; j++) {
                const float i = sigmoid_f32(gates[j]), f = sigmoid_f32(gates[H + j]);
                const float g = tanh_f32(gates[2 * H + j]), o = sigmoid_f32(gates[3 * H + j]);
                cl[j] = f * cl[j] + i * g;
                hl[j] = o * tanh_f32(cl[j]);
            }
        }
        x = hl;
        in_dim = H;
    }
}

/* logits (V) = head_b + h_top @ head_w. */
static void output_layer(const int64_t *dims, const float *const *ptrs, const float *h, float *logits) {
    const int64_t H = dims[DIM_HIDDEN], V = dims[DIM_VOCAB];
    memcpy(logits, ptrs[PTR_HEAD_B], (size_t)V * sizeof(float));
    add_matvec(logits, h + (dims[DIM_LAYERS] - 1) * H, ptrs[PTR_HEAD_W], H, V);
}

/* Feed tokens[0..n) one after the other; logits (V) then holds the logits after the last one (unchanged
 * when n is 0). Returns 0, or -1 when memory runs out (nothing is then changed). */
int rnnlm_feed(const int64_t *dims, const float *const *ptrs, const float *const *layer_ptrs, float *h, float *c,
               const int64_t *tokens, int64_t n, float *logits) {
    float *work = malloc((size_t)(8 * dims[DIM_HIDDEN]) * sizeof(float));
    if (work == NULL) return -1;
    for (int64_t i = 0; i < n; i++) step(dims, ptrs, layer_ptrs, h, c, work, work + 4 * dims[DIM_HIDDEN], tokens[i]);
    if (n > 0) output_layer(dims, ptrs, h, logits);
    free(work);
    return 0;
}

/* For each of `steps` steps: draw a token from logits (V) with uniforms[i] (uniforms may be NULL when
 * temperature is 0) into out[i], then feed it, which refills logits; the last token is fed only when
 * feed_last is set. trace (steps, V), when not NULL, receives the logits each token was drawn from, so a
 * caller that shows probabilities need not run the model again. Returns 0; -1 when memory runs out
 * (nothing is then changed); 1 when the logits give no distribution (see draw): out[i] is then -1, the
 * tokens before it were drawn and fed. */
int rnnlm_sample(const int64_t *dims, const float *const *ptrs, const float *const *layer_ptrs, float *h, float *c,
                 int64_t steps, const double *uniforms, double temperature, int feed_last, int64_t *out,
                 float *logits, float *trace) {
    const int64_t H = dims[DIM_HIDDEN], V = dims[DIM_VOCAB];
    float *work = malloc((size_t)(8 * H + V) * sizeof(float));
    if (work == NULL) return -1;
    for (int64_t i = 0; i < steps; i++) {
        if (trace != NULL) memcpy(trace + i * V, logits, (size_t)V * sizeof(float));
        out[i] = draw(logits, work + 8 * H, V, temperature, uniforms ? uniforms[i] : 0.0);
        if (out[i] < 0) {
            free(work);
            return 1;
        }
        if (i + 1 == steps && !feed_last) break;
        step(dims, ptrs, layer_ptrs, h, c, work, work + 4 * H, out[i]);
        output_layer(dims, ptrs, h, logits);
    }
    free(work);
    return 0;
}

/* The LSTM's pointwise step for rnnlm_trace: gates (4H) before their nonlinearities in, after them out; the
 * cell and hidden states of the step from the previous cell state. Its own function so that `restrict` tells
 * the compiler the rows do not overlap, and the loop vectorizes (twice the speed of the whole step). */
static void lstm_pointwise(float *restrict gates, const float *restrict c_prev, float *restrict c, float *restrict h,
                           int64_t H) {
    for (int64_t j = 0; j < H; j++) {
        const float i = sigmoid_f32(gates[j]), f = sigmoid_f32(gates[H + j]);
        const float g = tanh_f32(gates[2 * H + j]), o = sigmoid_f32(gates[3 * H + j]);
        c[j] = f * c_prev[j] + i * g;
        h[j] = o * tanh_f32(c[j]);
        gates[j] = i;
        gates[H + j] = f;
        gates[2 * H + j] = g;
        gates[3 * H + j] = o;
    }
}

/* The GRU's pointwise step for rnnlm_trace, as lstm_pointwise: hidden_part (3H) = h_prev W_hh^T + [0, 0, b_hn]. */
static void gru_pointwise(float *restrict gates, const float *restrict hidden_part, const float *restrict h_prev,
                          float *restrict h, int64_t H) {
    for (int64_t j = 0; j < H; j++) {
        const float r = sigmoid_f32(gates[j] + hidden_part[j]);
        const float z = sigmoid_f32(gates[H + j] + hidden_part[H + j]);
        const float n = tanh_f32(gates[2 * H + j] + r * hidden_part[2 * H + j]);
        gates[j] = r;
        gates[H + j] = z;
        gates[2 * H + j] = n;
        h[j] = n + z * (h_prev[j] - n);
    }
}

/* One layer over T steps with every step kept: what the Inspect page shows. xw (T, G*H) holds each step's input
 * part (x_t W_ih^T + bias, for all steps in one matrix product by the caller) and is overwritten with the gates
 * after their nonlinearities (lstm i, f, g, o; gru r, z, n; left as it is for the rnn). h_out and c_out (T, H)
 * receive h_t and the LSTM's c_t (c_out and c0 unused otherwise); h0 and c0 (H) are the state before the first
 * step; w_hh (H, G*H) and b_hn (G*H, the GRU's) as in `step`, whose arithmetic this is. Returns 0, or -1 when
 * memory runs out. */
int rnnlm_trace(int64_t cell, int64_t T, int64_t H, float *xw, const float *w_hh, const float *b_hn, const float *h0,
                const float *c0, float *h_out, float *c_out) {
    const int64_t G = cell == CELL_LSTM ? 4 : cell == CELL_GRU ? 3 : 1;
    float *hidden_part = malloc((size_t)(3 * H) * sizeof(float));
    if (hidden_part == NULL) return -1;
    const float *hp = h0, *cp = c0;
    for (int64_t t = 0; t < T; t++) {
        float *gates = xw + t * G * H, *ht = h_out + t * H;
        if (cell == CELL_RNN) {
            add_matvec(gates, hp, w_hh, H, H);
            for (int64_t j = 0; j < H; j++) ht[j] = tanh_f32(gates[j]);
        } else if (cell == CELL_GRU) {
            memcpy(hidden_part, b_hn, (size_t)(3 * H) * sizeof(float));
            add_matvec(hidden_part, hp, w_hh, H, 3 * H);
            gru_pointwise(gates, hidden_part, hp, ht, H);
        } else {
            add_matvec(gates, hp, w_hh, H, 4 * H);
            lstm_pointwise(gates, cp, c_out + t * H, ht, H);
            cp = c_out + t * H;
        }
        hp = ht;
    }
    free(hidden_part);
    return 0;
}

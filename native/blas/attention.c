/*
 * Causal multi-head self-attention for the tfjs wasm backend, forward and backward, straight on
 * the Transformer's q | k | v projection rows: per (row, head) slice two (forward) or four
 * (backward) strided sgemm calls and a fused masked softmax, zero-copy on Float32Arrays.
 *
 * Why: as tfjs ops the attention of one layer is a Transpose of [B, S, 3H, D] into heads, a split,
 * a scale, two batched matmuls, a bias add, a softmax and a Transpose back, and autodiff doubles
 * that; the head shuffles alone cost as much as the products. sgemm's leading dimensions address
 * a head's q, k and v inside the projection rows (lda = 3C) and write a head's output into the
 * merged rows (ldc = C), so no tensor is ever transposed, and the causal mask is applied inside
 * the softmax instead of as a materialised [B, H, S, S] bias.
 *
 * Layout (every index and count in float32 elements; each array is (Float32Array, offset) and
 * must hold what the kernel touches from that offset, else a RangeError is thrown):
 *   qkv [B*S, 3C] rows (C = H*D): row b*S + t holds q | k | v of token t of sequence b, head j
 *   at columns j*D (q), C + j*D (k), 2C + j*D (v); y and dy are [B*S, C] with head j at j*D;
 *   p is [B, H, S, S], the attention weights (0 above the diagonal).
 * Exports:
 *   attentionForward(qkv, qo, y, yo, p, po, b, s, h, d, scale)
 *     p = softmax_row(scale q kᵀ, keys j <= query i), y = p v
 *   attentionBackward(dy, dyo, qkv, qo, p, po, dqkv, dqo, b, s, h, d, scale)
 *     dv = pᵀ dy, dp = dy vᵀ, ds = p (dp - rowsum(p dp)), dq = scale ds k, dk = scale dsᵀ q,
 *     written into dqkv [B*S, 3C] in qkv's layout
 * The (row, head) pairs are split over as many threads as OpenBLAS has (parallel.h): its
 * products at these 45×32×45 sizes run on one thread each, so with two OpenBLAS threads the
 * attention would otherwise stay on one core. Each pair writes only its own slices, so the
 * results do not depend on the split.
 */
#include <cblas.h>
#include <math.h>
#include <node_api.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#include "attention.h"
#include "napi-span.h"
#include "parallel.h"
#include "vexp.h"

/* Larger than any model dimension the addon is asked about; bounds s*s scratch and int casts. */
#define MAX_DIM 65536
/* Fewest (row, head) pairs worth a thread of their own (one pair is ~5-30 µs of work). */
#define PAIRS_PER_CHUNK 16

static napi_value fail(napi_env env, bool range, const char *msg) {
  if (range)
    napi_throw_range_error(env, NULL, msg);
  else
    napi_throw_type_error(env, NULL, msg);
  return NULL;
}

/* argv[i], argv[i + 1] as (Float32Array, offset) holding `count` floats; NULL with an error thrown. */
static float *f32_at(napi_env env, napi_value *argv, int i, int64_t count, const char *fn) {
  return f32_span(env, argv[i], argv[i + 1], count, fn, fn);
}

/* The four sizes b, s, h, d at argv[i..i+3] and the scale at argv[i+4]. */
static bool sizes(napi_env env, napi_value *argv, int i, int64_t dims[4], float *scale) {
  for (int k = 0; k < 4; k++)
    if (napi_get_value_int64(env, argv[i + k], &dims[k]) != napi_ok || dims[k] < 1 || dims[k] > MAX_DIM)
      return false;
  double sc = 0;
  if (napi_get_value_double(env, argv[i + 4], &sc) != napi_ok) return false;
  *scale = (float)sc;
  return dims[2] * dims[3] <= MAX_DIM; /* C = h d is sgemm's leading dimension (3C) */
}

/* Each row i of a causal score matrix [s, s] (keys 0..i) → softmax weights; keys after i get 0. */
VECTOR_CLONES static void causal_softmax(float *scores, int64_t s) {
  for (int64_t i = 0; i < s; i++) {
    float *row = scores + i * s;
    const int64_t n = i + 1;
    const float mx = lane_max(row, n);
    for (int64_t j = 0; j < n; j++) row[j] = vexp_nonpositive(row[j] - mx);
    const float inv = 1.0f / lane_dot(row, NULL, n);
    for (int64_t j = 0; j < n; j++) row[j] *= inv;
    for (int64_t j = n; j < s; j++) row[j] = 0;
  }
}

/* dp [s, s] → ds = p (dp − Σ_j p dp) per row, in place; p is 0 after the diagonal, so ds is too. */
VECTOR_CLONES static void softmax_backward(const float *p, float *dp, int64_t s) {
  for (int64_t i = 0; i < s; i++) {
    const float *pr = p + i * s;
    float *dr = dp + i * s;
    const float dot = lane_dot(pr, dr, i + 1);
    for (int64_t j = 0; j <= i; j++) dr[j] = pr[j] * (dr[j] - dot);
    for (int64_t j = i + 1; j < s; j++) dr[j] = 0;
  }
}

/* One call's shapes and arrays; each (row, head) pair is independent of the others. */
struct attention_job {
  int64_t s, h, d, c;
  float scale;
  const float *qkv, *dy;
  float *y, *p, *dqkv;
  bool failed; /* a chunk could not allocate its scratch */
};

/* Forward for (row, head) pairs [begin, end): p = softmax(scale q kᵀ), y = p v. */
static void forward_pairs(void *arg, int64_t begin, int64_t end) {
  const struct attention_job *j = arg;
  const int64_t s = j->s, h = j->h, d = j->d, c = j->c;
  const int ld = (int)(3 * c), S = (int)s, D = (int)d;
  for (int64_t pair = begin; pair < end; pair++) {
    const int64_t bi = pair / h, hi = pair % h;
    const float *rows = j->qkv + bi * s * 3 * c;
    const float *q = rows + hi * d, *k = rows + c + hi * d, *v = rows + 2 * c + hi * d;
    float *ps = j->p + pair * s * s;
    /* scores = scale q kᵀ [S, S] */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, S, S, D, j->scale, q, ld, k, ld, 0.0f, ps, S);
    causal_softmax(ps, s);
    /* y = p v [S, D], into head hi's columns of the merged rows */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, S, D, S, 1.0f, ps, S, v, ld, 0.0f,
                j->y + bi * s * c + hi * d, (int)c);
  }
}

/* Backward for (row, head) pairs [begin, end), with an [S, S] scratch of the chunk's own. */
static void backward_pairs(void *arg, int64_t begin, int64_t end) {
  struct attention_job *j = arg;
  const int64_t s = j->s, h = j->h, d = j->d, c = j->c;
  const int ld = (int)(3 * c), S = (int)s, D = (int)d, C = (int)c;
  float *ds = malloc((size_t)(s * s) * sizeof(float));
  if (ds == NULL) {
    j->failed = true; /* a bool written only to true: racing chunks agree */
    return;
  }
  for (int64_t pair = begin; pair < end; pair++) {
    const int64_t bi = pair / h, hi = pair % h;
    const float *rows = j->qkv + bi * s * 3 * c, *dyh = j->dy + bi * s * c + hi * d;
    const float *q = rows + hi * d, *k = rows + c + hi * d, *v = rows + 2 * c + hi * d;
    const float *ps = j->p + pair * s * s;
    float *drows = j->dqkv + bi * s * 3 * c;
    float *dq = drows + hi * d, *dk = drows + c + hi * d, *dv = drows + 2 * c + hi * d;
    /* dv = pᵀ dy [S, D] */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, S, D, S, 1.0f, ps, S, dyh, C, 0.0f, dv, ld);
    /* dp = dy vᵀ [S, S] */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, S, S, D, 1.0f, dyh, C, v, ld, 0.0f, ds, S);
    softmax_backward(ps, ds, s); /* ds = p (dp − Σ_j p dp) */
    /* dq = scale ds k,  dk = scale dsᵀ q  [S, D] each */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, S, D, S, j->scale, ds, S, k, ld, 0.0f, dq, ld);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, S, D, S, j->scale, ds, S, q, ld, 0.0f, dk, ld);
  }
  free(ds);
}

static napi_value attention_forward(napi_env env, napi_callback_info info) {
  napi_value argv[11];
  size_t argc = 11;
  const char *fn = "attentionForward(qkv, qo, y, yo, p, po, b, s, h, d, scale)";
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 11) return fail(env, false, fn);
  int64_t dims[4];
  float scale;
  if (!sizes(env, argv, 6, dims, &scale)) return fail(env, true, "attentionForward: b, s, h, d out of range");
  const int64_t b = dims[0], s = dims[1], h = dims[2], d = dims[3], c = h * d;
  float *qkv = f32_at(env, argv, 0, b * s * 3 * c, "attentionForward: qkv");
  float *y = qkv == NULL ? NULL : f32_at(env, argv, 2, b * s * c, "attentionForward: y");
  float *p = y == NULL ? NULL : f32_at(env, argv, 4, b * h * s * s, "attentionForward: p");
  if (p == NULL) return NULL;
  struct attention_job job = {s, h, d, c, scale, qkv, NULL, y, p, NULL, false};
  parallel_for(b * h, PAIRS_PER_CHUNK, forward_pairs, &job);
  return NULL;
}

static napi_value attention_backward(napi_env env, napi_callback_info info) {
  napi_value argv[13];
  size_t argc = 13;
  const char *fn = "attentionBackward(dy, dyo, qkv, qo, p, po, dqkv, dqo, b, s, h, d, scale)";
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 13) return fail(env, false, fn);
  int64_t dims[4];
  float scale;
  if (!sizes(env, argv, 8, dims, &scale)) return fail(env, true, "attentionBackward: b, s, h, d out of range");
  const int64_t b = dims[0], s = dims[1], h = dims[2], d = dims[3], c = h * d;
  float *dy = f32_at(env, argv, 0, b * s * c, "attentionBackward: dy");
  float *qkv = dy == NULL ? NULL : f32_at(env, argv, 2, b * s * 3 * c, "attentionBackward: qkv");
  float *p = qkv == NULL ? NULL : f32_at(env, argv, 4, b * h * s * s, "attentionBackward: p");
  float *dqkv = p == NULL ? NULL : f32_at(env, argv, 6, b * s * 3 * c, "attentionBackward: dqkv");
  if (dqkv == NULL) return NULL;
  struct attention_job job = {s, h, d, c, scale, qkv, dy, NULL, p, dqkv, false};
  parallel_for(b * h, PAIRS_PER_CHUNK, backward_pairs, &job);
  if (job.failed) return fail(env, true, "attentionBackward: out of memory");
  return NULL;
}

napi_status attention_define(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"attentionForward", NULL, attention_forward, NULL, NULL, NULL, napi_default, NULL},
      {"attentionBackward", NULL, attention_backward, NULL, NULL, NULL, napi_default, NULL},
  };
  return napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props);
}

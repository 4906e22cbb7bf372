/*
 * Attention of a few queries per row over that row's fixed memory, one call for the whole batch:
 * the Seq2Seq decoder's Luong attention over its encoder states, and the tanh that follows it,
 * zero-copy on the wasm heap.
 *
 * Why: in tfjs ops a decoding step's attention is a batched scores product, a bias add, a softmax
 * and a batched context product; each product is one sgemm call per row (64 calls of a 1-row
 * matrix for a 64-row step), and the four dispatches plus those calls were a fifth of a Seq2Seq
 * decoding step. The arithmetic is tiny (width x hidden per query). services/core/src/model/
 * fused-kernels.ts registers this as a tfjs kernel; seq2seq.ts keeps the tfjs ops for training
 * and for machines without the addon.
 *
 * Exports (synchronous; the heap is one Float32Array, every tensor an element offset into it):
 *   attend(heap, q, keys, values, bias, ctx, batch, queries, width, hidden)
 *     q [B, J, H], keys and values [B, S, H], bias [B, S] (0, or -1e9 for padding), ctx [B, J, H]:
 *     per row b and query j, s_i = q_bj . k_bi + bias_bi, a = softmax_i(s), ctx_bj = sum_i a_i v_bi
 *   tanh(heap, x, y, n)
 *     y = tanh x = 2 sigmoid(2x) - 1 over n floats (the decoder's h~ = tanh([c; s] W_c + b_c):
 *     one kernel instead of four tfjs elementwise ops, each a dispatch and a pass over memory)
 * Each (row, query) is computed on its own in a fixed order (the dot products in 16 interleaved
 * float partial sums added up in a fixed tree), so a row's result never depends on the rows
 * batched with it. A padded position's weight is exactly 0 (exp underflows), so it adds nothing.
 */
#include <float.h>
#include <math.h>
#include <node_api.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#include "decoder-attention.h"
#include "gate-math.h"
#include "row-kernel.h"

#define ATTEND_INTS 9
#define LANES 16
/* A bias at or below this marks a padded position (the models use -1e9). */
#define PADDING -1e9f
/* exp(x) < FLT_MIN below this: such weights are taken as 0 (see attend_one). */
#define EXP_CUT -87.0f

static napi_value fail(napi_env env, bool range, const char *msg) {
  if (range)
    napi_throw_range_error(env, NULL, msg);
  else
    napi_throw_type_error(env, NULL, msg);
  return NULL;
}

/* q . k over n floats: LANES independent partial sums (vectorisable without reassociation). */
static inline float dot(int64_t n, const float *restrict q, const float *restrict k) {
  float acc[LANES] = {0};
  int64_t i = 0;
  for (; i + LANES <= n; i += LANES)
    for (int l = 0; l < LANES; l++) acc[l] += q[i + l] * k[i + l];
  for (int l = 0; i < n; i++, l++) acc[l] += q[i] * k[i];
  for (int w = LANES / 2; w > 0; w /= 2)
    for (int l = 0; l < w; l++) acc[l] += acc[l + w];
  return acc[0];
}

/*
 * One query: scores into s [S] (scratch), then ctx [H] = softmax(s) . values. Padded positions
 * (bias <= PADDING) are skipped: their weight exp(s - max) is exactly 0 whenever the row has a
 * real position; a row of padding only is computed in full, as the unfused maths would. Weights
 * below FLT_MIN count as 0: as subnormal floats every product with them took a microcode assist
 * (a peaked softmax made a 64-row step's attention ~9x slower), and they change no sum of
 * normal-sized context values.
 */
ROW_KERNEL attend_one(int64_t S, int64_t H, const float *restrict q, const float *restrict keys,
                      const float *restrict values, const float *restrict bias, float *restrict s,
                      float *restrict ctx) {
  int64_t real = 0;
  for (int64_t i = 0; i < S; i++) real += bias[i] > PADDING;
  float max = -INFINITY;
  for (int64_t i = 0; i < S; i++) {
    const bool use = real == 0 || bias[i] > PADDING;
    s[i] = use ? dot(H, q, keys + i * H) + bias[i] : -INFINITY;
    if (s[i] > max) max = s[i];
  }
  float sum = 0.0f;
  for (int64_t i = 0; i < S; i++) {
    const float x = s[i] - max;
    s[i] = x < EXP_CUT ? 0.0f : expf(x);
    sum += s[i];
  }
  for (int64_t h = 0; h < H; h++) ctx[h] = 0.0f;
  const float cut = FLT_MIN * sum; /* sum >= 1: the largest weight is exp(0) */
  for (int64_t i = 0; i < S; i++) {
    if (s[i] < cut) continue; /* padding, or a weight below FLT_MIN */
    const float a = s[i] / sum;
    const float *restrict v = values + i * H;
    for (int64_t h = 0; h < H; h++) ctx[h] += a * v[h];
  }
}

/* y = tanh x over n floats, as 2 sigmoid(2x) - 1 (gate-math.h). */
ROW_KERNEL tanh_rows(int64_t n, const float *restrict x, float *restrict y) {
  for (int64_t i = 0; i < n; i++) y[i] = tanh_s(x[i]);
}

/* tanh(heap, x, y, n): y = tanh x elementwise (offsets into the heap). */
static napi_value tanh_export(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  napi_typedarray_type type;
  void *data = NULL;
  size_t len = 0;
  bool is_ta = false;
  int64_t v[3];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 4)
    return fail(env, false, "tanh: expected the heap and 3 integers");
  if (napi_is_typedarray(env, argv[0], &is_ta) != napi_ok || !is_ta ||
      napi_get_typedarray_info(env, argv[0], &type, &len, &data, NULL, NULL) != napi_ok ||
      type != napi_float32_array)
    return fail(env, false, "tanh: the heap must be a Float32Array");
  for (int i = 0; i < 3; i++)
    if (napi_get_value_int64(env, argv[i + 1], &v[i]) != napi_ok)
      return fail(env, false, "tanh: offsets and the count must be integers");
  if (v[2] < 0 || v[0] < 0 || v[1] < 0 || v[0] + v[2] > (int64_t)len || v[1] + v[2] > (int64_t)len)
    return fail(env, true, "tanh: a tensor is out of range");
  tanh_rows(v[2], (const float *)data + v[0], (float *)data + v[1]);
  return NULL;
}

static napi_value attend(napi_env env, napi_callback_info info) {
  size_t argc = ATTEND_INTS + 1;
  napi_value argv[ATTEND_INTS + 1];
  napi_typedarray_type type;
  void *data = NULL;
  size_t len = 0;
  bool is_ta = false;
  int64_t v[ATTEND_INTS];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != ATTEND_INTS + 1)
    return fail(env, false, "attend: expected the heap and 9 integers");
  if (napi_is_typedarray(env, argv[0], &is_ta) != napi_ok || !is_ta ||
      napi_get_typedarray_info(env, argv[0], &type, &len, &data, NULL, NULL) != napi_ok ||
      type != napi_float32_array)
    return fail(env, false, "attend: the heap must be a Float32Array");
  for (int i = 0; i < ATTEND_INTS; i++)
    if (napi_get_value_int64(env, argv[i + 1], &v[i]) != napi_ok)
      return fail(env, false, "attend: offsets and sizes must be integers");
  const int64_t B = v[5], J = v[6], S = v[7], H = v[8];
  if (B < 1 || J < 1 || S < 1 || H < 1 || B > INT32_MAX || J > INT32_MAX || S > INT32_MAX || H > INT32_MAX)
    return fail(env, true, "attend: batch, queries, width and hidden must be positive 32-bit sizes");
  const int64_t counts[5] = {B * J * H, B * S * H, B * S * H, B * S, B * J * H};
  for (int i = 0; i < 5; i++)
    if (v[i] < 0 || v[i] + counts[i] > (int64_t)len) return fail(env, true, "attend: a tensor is out of range");
  float *heap = (float *)data;
  const float *q = heap + v[0], *keys = heap + v[1], *values = heap + v[2], *bias = heap + v[3];
  float *ctx = heap + v[4];
  float stack[256];
  float *s = S <= 256 ? stack : malloc(sizeof(float) * (size_t)S);
  if (s == NULL) return fail(env, true, "attend: out of memory");
  for (int64_t b = 0; b < B; b++)
    for (int64_t j = 0; j < J; j++)
      attend_one(S, H, q + (b * J + j) * H, keys + b * S * H, values + b * S * H, bias + b * S, s,
                 ctx + (b * J + j) * H);
  if (s != stack) free(s);
  return NULL;
}

napi_status decoder_attention_define(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"attend", NULL, attend, NULL, NULL, NULL, napi_default, NULL},
      {"tanh", NULL, tanh_export, NULL, NULL, NULL, napi_default, NULL},
  };
  return napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props);
}

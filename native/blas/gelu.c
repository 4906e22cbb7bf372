/*
 * tanh-GELU forward and backward, one pass each, for the tfjs wasm backend, zero-copy on
 * Float32Arrays (c = sqrt(2/pi), a = 0.044715, u = x (2c + 2ca x^2), s = sigmoid(u), so
 * gelu(x) = 0.5 x (1 + tanh(u / 2)) = x s):
 *   geluForward(x, xo, y, yo, n)          y = x s
 *   geluBackward(dy, dyo, x, xo, dx, dxo, n)
 *     dx = dy s (1 + (1 - s) x (2c + 6ca x^2)): d gelu/dx times dy, s recomputed from x
 * Each array is (Float32Array, offset) and must hold n floats from that offset, else a
 * RangeError is thrown.
 *
 * Why: as tfjs kernels the forward was three passes (u, the wasm Sigmoid, a Multiply) over the
 * MLP's [N, 4C] activations, and the backward read x, u and s back. At these sizes (6 MB a
 * tensor) the passes are memory-bound, so the fewest streams win: the forward reads x and
 * writes y, the backward reads dy and x and writes dx, and s is recomputed with the vectorised
 * exp of vexp.h instead of being stored and read back. With more than one OpenBLAS thread the
 * elements are split over that many threads (parallel.h) in 4,096-element blocks, so every
 * element is computed by the same code path whatever the split.
 */
#include <node_api.h>
#include <stdbool.h>
#include <stdint.h>

#include "gelu.h"
#include "napi-span.h"
#include "parallel.h"
#include "vexp.h"

#define GELU_C 0.7978845608028654f /* sqrt(2/pi) */
#define GELU_A 0.044715f

/* argv[i], argv[i + 1] as (Float32Array, offset) holding n floats; NULL with an error thrown. */
static float *floats_at(napi_env env, napi_value *argv, int i, int64_t n) {
  return f32_span(env, argv[i], argv[i + 1], n, "gelu kernels take Float32Arrays",
                  "gelu kernel: an array is out of range");
}

/* The count at argv[i]; false (with a RangeError thrown) unless a 32-bit count. */
static bool count_at(napi_env env, napi_value *argv, int i, int64_t *n) {
  if (napi_get_value_int64(env, argv[i], n) == napi_ok && *n >= 0 && *n <= INT32_MAX) return true;
  napi_throw_range_error(env, NULL, "gelu: n must be a 32-bit count");
  return false;
}

static bool argv_of(napi_env env, napi_callback_info info, size_t argc, napi_value *argv) {
  size_t got = argc;
  if (napi_get_cb_info(env, info, &got, argv, NULL, NULL) == napi_ok && got == argc) return true;
  napi_throw_type_error(env, NULL, argc == 5 ? "geluForward: expected 5 arguments" : "geluBackward: expected 7 arguments");
  return false;
}

static inline float gelu_sigmoid(float x) { return vsigmoid(x * (2 * GELU_C + 2 * GELU_C * GELU_A * x * x)); }

VECTOR_CLONES static void gelu_forward_loop(const float *x, float *y, int64_t n) {
  for (int64_t i = 0; i < n; i++) y[i] = x[i] * gelu_sigmoid(x[i]);
}

VECTOR_CLONES static void gelu_backward_loop(const float *dy, const float *x, float *dx, int64_t n) {
  for (int64_t i = 0; i < n; i++) {
    const float xi = x[i], si = gelu_sigmoid(xi);
    const float w = xi * (2 * GELU_C + 6 * GELU_C * GELU_A * xi * xi); /* x du/dx */
    dx[i] = dy[i] * si * (1 + (1 - si) * w);
  }
}

/* Elements per block of the parallel split: chunks start at block edges, 16 KiB apart. */
#define BLOCK 4096

/* One call's arrays; x and y for the forward, dy, x and dx for the backward. */
struct gelu_job {
  const float *dy, *x;
  float *y, *dx;
  int64_t n;
};

/* Elements [begin, end) of blocks [b0, b1). */
#define BLOCK_RANGE(j, b0, b1, begin, count)                      \
  const int64_t begin = (b0) * BLOCK;                             \
  const int64_t end_ = (b1) * BLOCK < (j)->n ? (b1) * BLOCK : (j)->n; \
  const int64_t count = end_ - begin

static void forward_blocks(void *arg, int64_t b0, int64_t b1) {
  const struct gelu_job *j = arg;
  BLOCK_RANGE(j, b0, b1, begin, count);
  gelu_forward_loop(j->x + begin, j->y + begin, count);
}

static void backward_blocks(void *arg, int64_t b0, int64_t b1) {
  const struct gelu_job *j = arg;
  BLOCK_RANGE(j, b0, b1, begin, count);
  gelu_backward_loop(j->dy + begin, j->x + begin, j->dx + begin, count);
}

/* Blocks of the n elements, and the fewest worth a thread of their own (~1 ms of work). */
#define BLOCKS(n) (((n) + BLOCK - 1) / BLOCK)
#define BLOCKS_PER_CHUNK 16

static napi_value gelu_forward(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  int64_t n = 0;
  if (!argv_of(env, info, 5, argv) || !count_at(env, argv, 4, &n)) return NULL;
  const float *x = floats_at(env, argv, 0, n);
  float *y = x == NULL ? NULL : floats_at(env, argv, 2, n);
  if (y == NULL) return NULL;
  struct gelu_job job = {NULL, x, y, NULL, n};
  parallel_for(BLOCKS(n), BLOCKS_PER_CHUNK, forward_blocks, &job);
  return NULL;
}

static napi_value gelu_backward(napi_env env, napi_callback_info info) {
  napi_value argv[7];
  int64_t n = 0;
  if (!argv_of(env, info, 7, argv) || !count_at(env, argv, 6, &n)) return NULL;
  const float *dy = floats_at(env, argv, 0, n);
  const float *x = dy == NULL ? NULL : floats_at(env, argv, 2, n);
  float *dx = x == NULL ? NULL : floats_at(env, argv, 4, n);
  if (dx == NULL) return NULL;
  struct gelu_job job = {dy, x, NULL, dx, n};
  parallel_for(BLOCKS(n), BLOCKS_PER_CHUNK, backward_blocks, &job);
  return NULL;
}

napi_status gelu_define(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"geluForward", NULL, gelu_forward, NULL, NULL, NULL, napi_default, NULL},
      {"geluBackward", NULL, gelu_backward, NULL, NULL, NULL, napi_default, NULL},
  };
  return napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props);
}

/*
 * Row softmax with its log-normaliser, one pass per row, for the tfjs wasm backend, zero-copy on
 * Float32Arrays:
 *   softmaxLse(z, zo, p, po, lse, lo, rows, cols)
 *     per row of z [rows, cols]: p = exp(z - max z) / sum, lse = max z + log sum
 *     (= log sum_v exp z_v); each array is (Float32Array, offset) and must hold what the kernel
 *     touches from that offset, else a RangeError is thrown.
 *
 * Why: the token log-probs and the entropy over the logits [N, V] (services/core/src/model/
 * loss.ts) each took a Softmax, two Max reductions, a Log and a Sub as tfjs kernels; tfjs-wasm's
 * Max over rows of 258 is as slow as the Softmax itself. Here the normaliser comes out of the
 * softmax's own sum, more exactly than max z - log max p. With more than one OpenBLAS thread the
 * rows are split over them (parallel.h); each row is one thread's, so the results are bitwise
 * those of one thread.
 */
#include <math.h>
#include <node_api.h>
#include <stdbool.h>
#include <stdint.h>

#include "softmax.h"
#include "napi-span.h"
#include "parallel.h"
#include "vexp.h"

/* The fewest rows (of ~258 logits) worth a thread of their own (~0.1 ms of work). */
#define ROW_GRAIN 128

VECTOR_CLONES static void softmax_lse_rows(const float *z, float *p, float *lse, int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; r++) {
    const float *zr = z + r * cols;
    float *pr = p + r * cols;
    const float mx = lane_max(zr, cols);
    for (int64_t j = 0; j < cols; j++) pr[j] = vexp_nonpositive(zr[j] - mx);
    const float sum = lane_dot(pr, NULL, cols);
    const float inv = 1.0f / sum;
    for (int64_t j = 0; j < cols; j++) pr[j] *= inv;
    lse[r] = mx + logf(sum);
  }
}

/* One call's arrays. */
struct softmax_job {
  const float *z;
  float *p, *lse;
  int64_t cols;
};

static void softmax_chunk(void *arg, int64_t r0, int64_t r1) {
  const struct softmax_job *j = arg;
  softmax_lse_rows(j->z + r0 * j->cols, j->p + r0 * j->cols, j->lse + r0, r1 - r0, j->cols);
}

/* argv[i], argv[i + 1] as (Float32Array, offset) holding n floats; NULL with an error thrown. */
static float *floats_at(napi_env env, napi_value *argv, int i, int64_t n) {
  return f32_span(env, argv[i], argv[i + 1], n, "softmaxLse takes Float32Arrays",
                  "softmaxLse: an array is out of range");
}

static napi_value softmax_lse(napi_env env, napi_callback_info info) {
  napi_value argv[8];
  size_t argc = 8;
  int64_t rows = 0, cols = 0;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 8) {
    napi_throw_type_error(env, NULL, "softmaxLse: expected 8 arguments");
    return NULL;
  }
  if (napi_get_value_int64(env, argv[6], &rows) != napi_ok || napi_get_value_int64(env, argv[7], &cols) != napi_ok ||
      rows < 0 || cols < 1 || rows > INT32_MAX || cols > INT32_MAX) {
    napi_throw_range_error(env, NULL, "softmaxLse: rows and cols must be 32-bit counts, cols > 0");
    return NULL;
  }
  const float *z = floats_at(env, argv, 0, rows * cols);
  float *p = z == NULL ? NULL : floats_at(env, argv, 2, rows * cols);
  float *lse = p == NULL ? NULL : floats_at(env, argv, 4, rows);
  if (lse == NULL) return NULL;
  struct softmax_job job = {z, p, lse, cols};
  parallel_for(rows, ROW_GRAIN, softmax_chunk, &job);
  return NULL;
}

napi_status softmax_define(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"softmaxLse", NULL, softmax_lse, NULL, NULL, NULL, napi_default, NULL},
  };
  return napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props);
}

/*
 * UnsortedSegmentSum over rows for the tfjs wasm backend (the embeddings' gradient), zero-copy:
 *   segmentSum(x, xo, ids, io, out, oo, n, width, segments)
 *     out[s, :] = Σ_{i < n, ids[i] = s} x[i, :] for s < segments, rows of `width` floats, ids
 *     outside [0, segments) skipped. `ids` is an int32 tensor read through a Float32Array view of
 *     the same heap (same offsets, its bits taken as int32). Every span must lie in its array,
 *     else a RangeError is thrown.
 *
 * Why: the JavaScript kernel (wasm-kernels.ts) took ~1–5 ms per [2816, 128] call, twice a learner
 * step (token and position embeddings), on one thread. Each output adds its rows in the order
 * i = 0, 1, … in float32, which is what the JavaScript loop computes (a float64 sum of two
 * float32 values rounds to their float32 sum), so the result is bitwise the same; the threads
 * split the columns, so that holds whatever the split.
 */
#include <node_api.h>
#include <stdint.h>
#include <string.h>

#include "napi-span.h"
#include "parallel.h"
#include "segment-sum.h"

/* Columns per chunk at least, and multiply-adds a thread must have to be worth starting. */
#define COL_GRAIN 16
#define MIN_WORK_PER_THREAD 131072

struct seg_job {
  const float *x;
  const int32_t *ids;
  float *out;
  int64_t n, width, segments;
};

static void columns(void *ctx, int64_t begin, int64_t end) {
  const struct seg_job *j = ctx;
  const int64_t lo = begin * COL_GRAIN, hi = end * COL_GRAIN < j->width ? end * COL_GRAIN : j->width;
  for (int64_t s = 0; s < j->segments; s++) memset(j->out + s * j->width + lo, 0, sizeof(float) * (size_t)(hi - lo));
  for (int64_t i = 0; i < j->n; i++) {
    const int32_t s = j->ids[i];
    if (s < 0 || s >= j->segments) continue;
    const float *xi = j->x + i * j->width;
    float *o = j->out + (int64_t)s * j->width;
    for (int64_t c = lo; c < hi; c++) o[c] += xi[c];
  }
}

static napi_value segment_sum(napi_env env, napi_callback_info info) {
  napi_value argv[9];
  if (!args(env, info, 9, argv, "segmentSum: expected 9 arguments")) return NULL;
  int64_t n, width, segments;
  if (!count_arg(env, argv[6], &n) || !count_arg(env, argv[7], &width) || !count_arg(env, argv[8], &segments))
    return range_error(env, "segmentSum: n, width and segments must be non-negative 32-bit counts");
  const char *type_msg = "segmentSum takes Float32Arrays", *range_msg = "segmentSum: an array is out of range";
  const float *x = f32_span(env, argv[0], argv[1], n * width, type_msg, range_msg);
  const float *ids = x == NULL ? NULL : f32_span(env, argv[2], argv[3], n, type_msg, range_msg);
  float *out = ids == NULL ? NULL : f32_span(env, argv[4], argv[5], segments * width, type_msg, range_msg);
  if (out == NULL || width == 0) return NULL;
  struct seg_job job = {x, (const int32_t *)ids, out, n, width, segments};
  const int64_t chunks = (width + COL_GRAIN - 1) / COL_GRAIN;
  const int64_t per_chunk = (n + segments) * COL_GRAIN;
  const int64_t grain = per_chunk >= MIN_WORK_PER_THREAD ? 1 : (MIN_WORK_PER_THREAD + per_chunk - 1) / per_chunk;
  parallel_for(chunks, grain, columns, &job);
  return NULL;
}

napi_status segment_sum_define(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"segmentSum", NULL, segment_sum, NULL, NULL, NULL, napi_default, NULL},
  };
  return napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props);
}

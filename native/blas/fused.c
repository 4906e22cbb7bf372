/*
 * Fused elementwise kernels for the tfjs wasm backend: Adam's update and the GRU backward's gate
 * factors, each one pass over its tensors, zero-copy on Float32Arrays (LayerNorm's are in
 * layer-norm.c, GELU's in gelu.c).
 *
 * Why: on the wasm backend every tfjs elementwise op is its own pass over memory plus a kernel
 * dispatch; the Transformer's LayerNorm is ~20 such passes forward and backward, GELU ~14, and
 * together they were a third of a learner step. The kernels in
 * services/core/src/model/fused-kernels.ts call these on views of the wasm heap.
 *
 * Exports (synchronous; every index and count in float32 elements; each array is (Float32Array,
 * offset) and must hold what the kernel touches from that offset, else a RangeError is thrown):
 *   adam(p, po, g, go, m, mo, v, vo, p2, p2o, m2, m2o, v2, v2o, n,
 *        beta1, 1 - beta1, beta2, 1 - beta2, eps, step, sqrtBc2, decay, gradScale)
 *     with g = gradScale g (the global-norm clip's factor, 1 when nothing is clipped):
 *     m2 = beta1 m + (1 - beta1) g, v2 = beta2 v + (1 - beta2) g^2,
 *     p2 = decay p - step m2 / (sqrt(v2) / sqrtBc2 + eps)   (step = lr / (1 - beta1^t)),
 *     in float32, each constant rounded once and every operation in the order learn/adam.ts's
 *     tfjs ops take, so both give the same floats
 *   gruFactors(hp, hpo, r, ro, z, zo, n, no, un, uno, m, mo, pa, pao, pu, puo, zc, zco, rows, h)
 *     the GRU backward's per-element factors for every step at once (services/core/src/model/
 *     gru-layer.ts gives the equations): pa = [pr | pz | pn], pu = [pr | pz | pn r] (rows x 3h),
 *     zc (rows x h); m (rows x 1) may be null (no masks); the same float32 operations in the
 *     same order as gru-layer.ts's tfjs ops
 * Adam's elements are split over the OpenBLAS threads (parallel.h) in 4,096-element blocks: each
 * element is its own few float operations, so the results are bitwise those of one thread.
 */
#include <math.h>
#include <node_api.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#include "fused.h"
#include "napi-span.h"
#include "parallel.h"

#define MAX_ARGS 16

/*
 * The span of `count` floats at (array, offset) given as two arguments; NULL (with an error
 * thrown) when the array is not a Float32Array or the span leaves it.
 */
static float *span(napi_env env, napi_value array, napi_value offset, int64_t count) {
  return f32_span(env, array, offset, count, "fused kernels take Float32Arrays",
                  "fused kernel: an array is out of range");
}

/* Elements per block of Adam's split, and the fewest blocks worth a thread (~0.1 ms of work). */
#define ADAM_BLOCK 4096
#define ADAM_GRAIN 8

/* One Adam call: inputs p, g, m, v; outputs p2, m2, v2; the float32 constants. */
struct adam_job {
  const float *p, *g, *m, *v;
  float *p2, *m2, *v2;
  int64_t n;
  float b1, c1, b2, c2, eps, step, sqrt_bc2, decay, gs;
};

/* Elements of blocks [k0, k1). */
static void adam_blocks(void *arg, int64_t k0, int64_t k1) {
  const struct adam_job *j = arg;
  const int64_t end = k1 * ADAM_BLOCK < j->n ? k1 * ADAM_BLOCK : j->n;
  const float b1 = j->b1, c1 = j->c1, b2 = j->b2, c2 = j->c2, eps = j->eps, step = j->step;
  const float sqrt_bc2 = j->sqrt_bc2, decay = j->decay, gs = j->gs;
  for (int64_t i = k0 * ADAM_BLOCK; i < end; i++) {
    const float gi = j->g[i] * gs; /* exactly g[i] at gs = 1 */
    const float mi = j->m[i] * b1 + gi * c1;
    const float vi = j->v[i] * b2 + (gi * gi) * c2;
    j->m2[i] = mi;
    j->v2[i] = vi;
    j->p2[i] = j->p[i] * decay - (mi / (sqrtf(vi) / sqrt_bc2 + eps)) * step;
  }
}

static napi_value adam(napi_env env, napi_callback_info info) {
  napi_value argv[24];
  int64_t n;
  double hp[9]; /* beta1, 1 - beta1, beta2, 1 - beta2, eps, step, sqrtBc2, decay, gradScale */
  if (!args(env, info, 24, argv, "adam: expected 24 arguments")) return NULL;
  if (!count_arg(env, argv[14], &n)) return range_error(env, "adam: n must be a 32-bit count");
  for (int k = 0; k < 9; k++)
    if (napi_get_value_double(env, argv[15 + k], &hp[k]) != napi_ok)
      return type_error(env, "adam: hyperparameters must be numbers");
  float *spans[7]; /* p, g, m, v, p2, m2, v2 */
  for (int k = 0; k < 7; k++)
    if ((spans[k] = span(env, argv[2 * k], argv[2 * k + 1], n)) == NULL) return NULL;
  struct adam_job job = {spans[0], spans[1], spans[2], spans[3], spans[4], spans[5], spans[6], n,
                         (float)hp[0], (float)hp[1], (float)hp[2], (float)hp[3], (float)hp[4],
                         (float)hp[5], (float)hp[6], (float)hp[7], (float)hp[8]};
  parallel_for((n + ADAM_BLOCK - 1) / ADAM_BLOCK, ADAM_GRAIN, adam_blocks, &job);
  return NULL;
}

static napi_value gru_factors(napi_env env, napi_callback_info info) {
  napi_value argv[20];
  int64_t rows, h;
  napi_valuetype mtype;
  if (!args(env, info, 20, argv, "gruFactors: expected 20 arguments")) return NULL;
  if (!count_arg(env, argv[18], &rows) || !count_arg(env, argv[19], &h))
    return range_error(env, "gruFactors: rows and h must be 32-bit counts");
  const int64_t n = rows * h;
  float *in[5]; /* hp, r, z, n, uN */
  for (int k = 0; k < 5; k++)
    if ((in[k] = span(env, argv[2 * k], argv[2 * k + 1], n)) == NULL) return NULL;
  float *m = NULL;
  if (napi_typeof(env, argv[10], &mtype) != napi_ok) return NULL;
  if (mtype != napi_null && (m = span(env, argv[10], argv[11], rows)) == NULL) return NULL;
  float *pa = span(env, argv[12], argv[13], 3 * n);
  float *pu = pa == NULL ? NULL : span(env, argv[14], argv[15], 3 * n);
  float *zc = pu == NULL ? NULL : span(env, argv[16], argv[17], n);
  if (zc == NULL) return NULL;
  for (int64_t i = 0; i < rows; i++) {
    for (int64_t j = 0; j < h; j++) {
      const int64_t e = i * h + j;
      const float hp = in[0][e], r = in[1][e], z = in[2][e], nn = in[3][e], un = in[4][e];
      const float omz = 1 - z;
      float pn = omz * (1 - nn * nn);
      float pz = ((hp - nn) * z) * omz;
      float pr = (pn * un) * (r * (1 - r));
      float zcv = z;
      if (m != NULL) {
        pn *= m[i];
        pz *= m[i];
        pr *= m[i];
        zcv = 1 - m[i] * omz;
      }
      float *par = pa + i * 3 * h, *pur = pu + i * 3 * h;
      par[j] = pur[j] = pr;
      par[h + j] = pur[h + j] = pz;
      par[2 * h + j] = pn;
      pur[2 * h + j] = pn * r;
      zc[e] = zcv;
    }
  }
  return NULL;
}

napi_status fused_define(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"adam", NULL, adam, NULL, NULL, NULL, napi_default, NULL},
      {"gruFactors", NULL, gru_factors, NULL, NULL, NULL, napi_default, NULL},
  };
  return napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props);
}

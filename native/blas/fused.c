/*
 * Fused elementwise kernels for the tfjs wasm backend: LayerNorm forward/backward, Adam's update
 * and the GRU backward's gate factors, each one pass over its tensors, zero-copy on Float32Arrays
 * (GELU's are in gelu.c).
 *
 * Why: on the wasm backend every tfjs elementwise op is its own pass over memory plus a kernel
 * dispatch; the Transformer's LayerNorm is ~20 such passes forward and backward, GELU ~14, and
 * together they were a third of a learner step. The kernels in
 * services/core/src/model/fused-kernels.ts call these on views of the wasm heap.
 *
 * Exports (synchronous; every index and count in float32 elements; each array is (Float32Array,
 * offset) and must hold what the kernel touches from that offset, else a RangeError is thrown):
 *   layerNorm(x, xo, g, go, b, bo, y, yo, xhat, xho, rstd, ro, rows, cols, eps)
 *     per row: mu = mean x, rstd = 1/sqrt(mean (x - mu)^2 + eps), xhat = (x - mu) rstd,
 *     y = xhat g + b
 *   layerNormGrad(dy, dyo, xhat, xho, rstd, ro, g, go, dx, dxo, dg, dgo, db, dbo, rows, cols)
 *     per row, with gx = dy g: dx = rstd (gx - mean gx - xhat mean(gx xhat));
 *     over rows: dg = sum dy xhat, db = sum dy
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
 * Row statistics and the column sums accumulate in double.
 */
#include <math.h>
#include <node_api.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#include "fused.h"
#include "napi-span.h"

#define MAX_ARGS 16

static napi_value range_error(napi_env env, const char *msg) {
  napi_throw_range_error(env, NULL, msg);
  return NULL;
}

static napi_value type_error(napi_env env, const char *msg) {
  napi_throw_type_error(env, NULL, msg);
  return NULL;
}

/* Reads argc arguments into argv; false (with a TypeError thrown) when fewer were passed. */
static bool args(napi_env env, napi_callback_info info, size_t argc, napi_value *argv, const char *fn) {
  size_t got = argc;
  if (napi_get_cb_info(env, info, &got, argv, NULL, NULL) != napi_ok || got != argc) {
    type_error(env, fn);
    return false;
  }
  return true;
}

static bool count_arg(napi_env env, napi_value v, int64_t *out) {
  return napi_get_value_int64(env, v, out) == napi_ok && *out >= 0 && *out <= INT32_MAX;
}

/*
 * The span of `count` floats at (array, offset) given as two arguments; NULL (with an error
 * thrown) when the array is not a Float32Array or the span leaves it.
 */
static float *span(napi_env env, napi_value array, napi_value offset, int64_t count) {
  return f32_span(env, array, offset, count, "fused kernels take Float32Arrays",
                  "fused kernel: an array is out of range");
}

/* sum_j a[j] in double, over four accumulators (four dependency chains: the sums limit a row). */
static double row_sum(const float *a, int64_t n) {
  double s[4] = {0, 0, 0, 0};
  int64_t j = 0;
  for (; j + 4 <= n; j += 4)
    for (int k = 0; k < 4; k++) s[k] += a[j + k];
  for (; j < n; j++) s[0] += a[j];
  return (s[0] + s[1]) + (s[2] + s[3]);
}

static napi_value layer_norm(napi_env env, napi_callback_info info) {
  napi_value argv[15];
  int64_t rows, cols;
  double eps;
  if (!args(env, info, 15, argv, "layerNorm: expected 15 arguments")) return NULL;
  if (!count_arg(env, argv[12], &rows) || !count_arg(env, argv[13], &cols) || cols == 0)
    return range_error(env, "layerNorm: rows and cols must be 32-bit counts, cols > 0");
  if (napi_get_value_double(env, argv[14], &eps) != napi_ok) return type_error(env, "layerNorm: eps must be a number");
  const int64_t n = rows * cols;
  float *x = span(env, argv[0], argv[1], n);
  float *g = x == NULL ? NULL : span(env, argv[2], argv[3], cols);
  float *b = g == NULL ? NULL : span(env, argv[4], argv[5], cols);
  float *y = b == NULL ? NULL : span(env, argv[6], argv[7], n);
  float *xhat = y == NULL ? NULL : span(env, argv[8], argv[9], n);
  float *rstd = xhat == NULL ? NULL : span(env, argv[10], argv[11], rows);
  if (rstd == NULL) return NULL;
  for (int64_t r = 0; r < rows; r++) {
    const float *xr = x + r * cols;
    const double mu = row_sum(xr, cols) / (double)cols;
    /* variance about the mean: sum_j (x_j - mu)^2 */
    double sq[4] = {0, 0, 0, 0};
    int64_t j = 0;
    for (; j + 4 <= cols; j += 4)
      for (int k = 0; k < 4; k++) sq[k] += (xr[j + k] - mu) * (xr[j + k] - mu);
    for (; j < cols; j++) sq[0] += (xr[j] - mu) * (xr[j] - mu);
    const double var = ((sq[0] + sq[1]) + (sq[2] + sq[3])) / (double)cols;
    const float rs = (float)(1.0 / sqrt(var + eps));
    const float muf = (float)mu;
    rstd[r] = rs;
    for (int64_t j = 0; j < cols; j++) {
      const float xh = (xr[j] - muf) * rs;
      xhat[r * cols + j] = xh;
      y[r * cols + j] = xh * g[j] + b[j];
    }
  }
  return NULL;
}

static napi_value layer_norm_grad(napi_env env, napi_callback_info info) {
  napi_value argv[16];
  int64_t rows, cols;
  if (!args(env, info, 16, argv, "layerNormGrad: expected 16 arguments")) return NULL;
  if (!count_arg(env, argv[14], &rows) || !count_arg(env, argv[15], &cols) || cols == 0)
    return range_error(env, "layerNormGrad: rows and cols must be 32-bit counts, cols > 0");
  const int64_t n = rows * cols;
  float *dy = span(env, argv[0], argv[1], n);
  float *xhat = dy == NULL ? NULL : span(env, argv[2], argv[3], n);
  float *rstd = xhat == NULL ? NULL : span(env, argv[4], argv[5], rows);
  float *g = rstd == NULL ? NULL : span(env, argv[6], argv[7], cols);
  float *dx = g == NULL ? NULL : span(env, argv[8], argv[9], n);
  float *dg = dx == NULL ? NULL : span(env, argv[10], argv[11], cols);
  float *db = dg == NULL ? NULL : span(env, argv[12], argv[13], cols);
  if (db == NULL) return NULL;
  double *acc = calloc((size_t)(2 * cols), sizeof(double)); /* [sum dy xhat | sum dy] per column */
  if (acc == NULL) return range_error(env, "layerNormGrad: out of memory");
  for (int64_t r = 0; r < rows; r++) {
    const float *dyr = dy + r * cols, *xhr = xhat + r * cols;
    for (int64_t j = 0; j < cols; j++) {
      acc[j] += dyr[j] * xhr[j];
      acc[cols + j] += dyr[j];
    }
    /* mean_j gx and mean_j gx xhat, gx = dy g */
    double m1[4] = {0, 0, 0, 0}, m2[4] = {0, 0, 0, 0};
    int64_t j = 0;
    for (; j + 4 <= cols; j += 4)
      for (int k = 0; k < 4; k++) {
        const float gx = dyr[j + k] * g[j + k];
        m1[k] += gx;
        m2[k] += gx * xhr[j + k];
      }
    for (; j < cols; j++) {
      m1[0] += dyr[j] * g[j];
      m2[0] += dyr[j] * g[j] * xhr[j];
    }
    const float mean1 = (float)(((m1[0] + m1[1]) + (m1[2] + m1[3])) / (double)cols);
    const float mean2 = (float)(((m2[0] + m2[1]) + (m2[2] + m2[3])) / (double)cols);
    const float rs = rstd[r];
    for (int64_t j = 0; j < cols; j++) dx[r * cols + j] = rs * (dyr[j] * g[j] - mean1 - xhr[j] * mean2);
  }
  for (int64_t j = 0; j < cols; j++) {
    dg[j] = (float)acc[j];
    db[j] = (float)acc[cols + j];
  }
  free(acc);
  return NULL;
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
  const float *p = spans[0], *g = spans[1], *m = spans[2], *v = spans[3];
  float *p2 = spans[4], *m2 = spans[5], *v2 = spans[6];
  const float b1 = (float)hp[0], c1 = (float)hp[1], b2 = (float)hp[2], c2 = (float)hp[3];
  const float eps = (float)hp[4], step = (float)hp[5], sqrt_bc2 = (float)hp[6], decay = (float)hp[7];
  const float gs = (float)hp[8];
  for (int64_t i = 0; i < n; i++) {
    const float gi = g[i] * gs; /* exactly g[i] at gs = 1 */
    const float mi = m[i] * b1 + gi * c1;
    const float vi = v[i] * b2 + (gi * gi) * c2;
    m2[i] = mi;
    v2[i] = vi;
    p2[i] = p[i] * decay - (mi / (sqrtf(vi) / sqrt_bc2 + eps)) * step;
  }
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
      {"layerNorm", NULL, layer_norm, NULL, NULL, NULL, napi_default, NULL},
      {"layerNormGrad", NULL, layer_norm_grad, NULL, NULL, NULL, napi_default, NULL},
      {"adam", NULL, adam, NULL, NULL, NULL, napi_default, NULL},
      {"gruFactors", NULL, gru_factors, NULL, NULL, NULL, napi_default, NULL},
  };
  return napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props);
}

/*
 * LayerNorm forward and backward for the tfjs wasm backend, one pass each, zero-copy on
 * Float32Arrays (services/core/src/model/fused-kernels.ts calls them on views of the wasm heap):
 *   layerNorm(x, xo, g, go, b, bo, y, yo, xhat, xho, rstd, ro, rows, cols, eps)
 *     per row: mu = mean x, rstd = 1/sqrt(mean (x - mu)^2 + eps), xhat = (x - mu) rstd,
 *     y = xhat g + b
 *   layerNormGrad(dy, dyo, xhat, xho, rstd, ro, g, go, dx, dxo, dg, dgo, db, dbo, rows, cols)
 *     per row, with gx = dy g: dx = rstd (gx - mean gx - xhat mean(gx xhat));
 *     over rows: dg = sum dy xhat, db = sum dy
 * Every index and count in float32 elements; each array is (Float32Array, offset) and must hold
 * what the kernel touches from that offset, else a RangeError is thrown. Row statistics and the
 * column sums accumulate in double.
 *
 * Why: LayerNorm through tfjs ops was ~20 passes over memory forward and backward. Why split
 * (parallel.h): with two OpenBLAS threads the products halve and the one-threaded LayerNorm
 * kernels became ~10% of a learner step. The forward and dx are split by rows (each row is one
 * thread's), dg and db by columns: each column's sum still runs over rows 0, 1, 2, ... in the
 * same double accumulator, so every output is bitwise the same whatever the split. On one thread
 * both run in one pass over the rows, as before the split.
 */
#include <math.h>
#include <node_api.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#include "layer-norm.h"
#include "napi-span.h"
#include "parallel.h"

/* The fewest rows (of ~128 floats) or columns worth a thread of their own (~0.1 ms of work). */
#define ROW_GRAIN 256
#define COL_GRAIN 32

static float *span(napi_env env, napi_value array, napi_value offset, int64_t count) {
  return f32_span(env, array, offset, count, "layerNorm kernels take Float32Arrays",
                  "layerNorm kernel: an array is out of range");
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

/* One call's arrays (the forward's x, g, b, y, xhat, rstd; the backward's dy, xhat, rstd, g, dx, acc). */
struct ln_job {
  const float *x, *g, *b, *dy, *xhat_in, *rstd_in;
  float *y, *xhat, *rstd, *dx;
  double *acc; /* [sum dy xhat | sum dy] per column */
  bool fuse;   /* one thread: grad_rows sums the columns too (one pass instead of two) */
  int64_t rows, cols;
  double eps;
};

static void forward_rows(void *arg, int64_t r0, int64_t r1) {
  const struct ln_job *jb = arg;
  const int64_t cols = jb->cols;
  for (int64_t r = r0; r < r1; r++) {
    const float *xr = jb->x + r * cols;
    const double mu = row_sum(xr, cols) / (double)cols;
    /* variance about the mean: sum_j (x_j - mu)^2 */
    double sq[4] = {0, 0, 0, 0};
    int64_t j = 0;
    for (; j + 4 <= cols; j += 4)
      for (int k = 0; k < 4; k++) sq[k] += (xr[j + k] - mu) * (xr[j + k] - mu);
    for (; j < cols; j++) sq[0] += (xr[j] - mu) * (xr[j] - mu);
    const double var = ((sq[0] + sq[1]) + (sq[2] + sq[3])) / (double)cols;
    const float rs = (float)(1.0 / sqrt(var + jb->eps));
    const float muf = (float)mu;
    jb->rstd[r] = rs;
    float *xh = jb->xhat + r * cols, *yr = jb->y + r * cols;
    for (int64_t c = 0; c < cols; c++) {
      const float v = (xr[c] - muf) * rs;
      xh[c] = v;
      yr[c] = v * jb->g[c] + jb->b[c];
    }
  }
}

static void grad_rows(void *arg, int64_t r0, int64_t r1) {
  const struct ln_job *jb = arg;
  const int64_t cols = jb->cols;
  const float *g = jb->g;
  for (int64_t r = r0; r < r1; r++) {
    const float *dyr = jb->dy + r * cols, *xhr = jb->xhat_in + r * cols;
    if (jb->fuse)
      for (int64_t j = 0; j < cols; j++) {
        jb->acc[j] += dyr[j] * xhr[j];
        jb->acc[cols + j] += dyr[j];
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
    const float rs = jb->rstd_in[r];
    float *dxr = jb->dx + r * cols;
    for (int64_t c = 0; c < cols; c++) dxr[c] = rs * (dyr[c] * g[c] - mean1 - xhr[c] * mean2);
  }
}

/* Columns [c0, c1) of dg and db, each summed over rows in order. */
static void grad_cols(void *arg, int64_t c0, int64_t c1) {
  const struct ln_job *jb = arg;
  const int64_t cols = jb->cols;
  double *sdg = jb->acc, *sdb = jb->acc + cols;
  for (int64_t r = 0; r < jb->rows; r++) {
    const float *dyr = jb->dy + r * cols, *xhr = jb->xhat_in + r * cols;
    for (int64_t j = c0; j < c1; j++) {
      sdg[j] += dyr[j] * xhr[j];
      sdb[j] += dyr[j];
    }
  }
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
  struct ln_job job = {.x = x, .g = g, .b = b, .y = y, .xhat = xhat, .rstd = rstd, .rows = rows, .cols = cols, .eps = eps};
  parallel_for(rows, ROW_GRAIN, forward_rows, &job);
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
  double *acc = calloc((size_t)(2 * cols), sizeof(double));
  if (acc == NULL) return range_error(env, "layerNormGrad: out of memory");
  /* the column pass is worth a thread only with enough rows behind each column */
  const int64_t col_grain = rows >= ROW_GRAIN ? COL_GRAIN : cols;
  struct ln_job job = {.dy = dy, .xhat_in = xhat, .rstd_in = rstd, .g = g, .dx = dx, .acc = acc, .rows = rows, .cols = cols,
                       .fuse = parallel_parts(rows, ROW_GRAIN) == 1 && parallel_parts(cols, col_grain) == 1};
  parallel_for(rows, ROW_GRAIN, grad_rows, &job);
  if (!job.fuse) parallel_for(cols, col_grain, grad_cols, &job);
  for (int64_t j = 0; j < cols; j++) {
    dg[j] = (float)acc[j];
    db[j] = (float)acc[cols + j];
  }
  free(acc);
  return NULL;
}

napi_status layer_norm_define(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"layerNorm", NULL, layer_norm, NULL, NULL, NULL, napi_default, NULL},
      {"layerNormGrad", NULL, layer_norm_grad, NULL, NULL, NULL, napi_default, NULL},
  };
  return napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props);
}

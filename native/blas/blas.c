/*
 * rlaif_blas: OpenBLAS sgemm for Node, zero-copy on Float32Arrays.
 *
 * Why: tfjs's wasm backend runs transposed and batched matmuls at 1-10 GFLOP/s; OpenBLAS reaches
 * ~100 GFLOP/s per core on the same shapes. The tfjs kernel in
 * services/core/src/model/blas-kernels.ts passes Float32Array views of the wasm heap, so no data
 * is copied: sgemm reads and writes the tensors where they live.
 *
 * Exports (all synchronous; every index and count is in float32 elements):
 *   sgemm(transA, transB, m, n, k, alpha, a, aOffset, aStride, b, bOffset, bStride,
 *         beta, c, cOffset, cStride, batch)
 *     For i in [0, batch): C_i = alpha * op(A_i) op(B_i) + beta * C_i, row-major and contiguous,
 *     where X_i starts at xOffset + i * xStride (a stride of 0 broadcasts one matrix), op(A_i) is
 *     m x k (A_i stored k x m when transA), op(B_i) is k x n (stored n x k when transB), C_i m x n.
 *     Every matrix must lie inside its array: out-of-range arguments throw a RangeError instead of
 *     touching memory outside the array.
 *     Large products are split over the addon's threads (gemm.h), bitwise as one call.
 *   setThreads(n)  the addon's thread count: its products (gemm.h) and kernels (parallel.h) run on
 *                  n threads, each OpenBLAS call on one
 *   info()         { threads (the addon's), corename, config } of the OpenBLAS in use
 * and the fused kernels of fused.c (Adam, GRU factors), layer-norm.c (LayerNorm forward and
 * backward), attention.c (causal attention), gelu.c (GELU forward and backward),
 * elementwise.c (Add, Sub, Multiply with broadcasting), softmax.c (row softmax with its log-normaliser),
 * decoder-attention.c (the Seq2Seq decoder's attention and tanh), segment-sum.c (the embeddings'
 * gradient) and the recurrent layers of
 * recurrent.c (GRU, LSTM).
 */
#include <cblas.h>
#include <node_api.h>
#include <stdbool.h>
#include <stdint.h>

#include "attention.h"
#include "decoder-attention.h"
#include "fused.h"
#include "gemm.h"
#include "elementwise.h"
#include "gelu.h"
#include "layer-norm.h"
#include "parallel.h"
#include "segment-sum.h"
#include "softmax.h"
#include "recurrent.h"

#define SGEMM_ARGS 17

static napi_value throw_error(napi_env env, bool range, const char *msg) {
  if (range)
    napi_throw_range_error(env, NULL, msg);
  else
    napi_throw_type_error(env, NULL, msg);
  return NULL;
}

static bool get_int(napi_env env, napi_value v, int64_t *out) {
  return napi_get_value_int64(env, v, out) == napi_ok;
}

/* Float32Array -> data pointer and length in elements. */
static bool get_f32(napi_env env, napi_value v, float **data, size_t *len) {
  bool is_ta = false;
  if (napi_is_typedarray(env, v, &is_ta) != napi_ok || !is_ta) return false;
  napi_typedarray_type type;
  void *ptr = NULL;
  if (napi_get_typedarray_info(env, v, &type, len, &ptr, NULL, NULL) != napi_ok) return false;
  if (type != napi_float32_array) return false;
  *data = (float *)ptr;
  return true;
}

/* True when `count` matrices of `size` elements, `stride` apart from `offset`, fit in `len`. */
static bool fits(int64_t offset, int64_t stride, int64_t size, int64_t count, size_t len) {
  if (offset < 0 || stride < 0 || size < 0) return false;
  if (count == 0 || size == 0) return true;
  return offset + (count - 1) * stride + size <= (int64_t)len;
}

static napi_value sgemm(napi_env env, napi_callback_info info) {
  size_t argc = SGEMM_ARGS;
  napi_value argv[SGEMM_ARGS];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != SGEMM_ARGS)
    return throw_error(env, false, "sgemm: expected 17 arguments");
  bool transA = false, transB = false;
  int64_t m, n, k, aOff, aStride, bOff, bStride, cOff, cStride, batch;
  double alpha, beta;
  float *a, *b, *c;
  size_t aLen, bLen, cLen;
  if (napi_get_value_bool(env, argv[0], &transA) != napi_ok ||
      napi_get_value_bool(env, argv[1], &transB) != napi_ok)
    return throw_error(env, false, "sgemm: transA and transB must be booleans");
  if (!get_int(env, argv[2], &m) || !get_int(env, argv[3], &n) || !get_int(env, argv[4], &k) ||
      !get_int(env, argv[7], &aOff) || !get_int(env, argv[8], &aStride) ||
      !get_int(env, argv[10], &bOff) || !get_int(env, argv[11], &bStride) ||
      !get_int(env, argv[14], &cOff) || !get_int(env, argv[15], &cStride) ||
      !get_int(env, argv[16], &batch))
    return throw_error(env, false, "sgemm: sizes, offsets, strides and batch must be numbers");
  if (napi_get_value_double(env, argv[5], &alpha) != napi_ok ||
      napi_get_value_double(env, argv[12], &beta) != napi_ok)
    return throw_error(env, false, "sgemm: alpha and beta must be numbers");
  if (!get_f32(env, argv[6], &a, &aLen) || !get_f32(env, argv[9], &b, &bLen) ||
      !get_f32(env, argv[13], &c, &cLen))
    return throw_error(env, false, "sgemm: a, b and c must be Float32Arrays");
  if (m < 0 || n < 0 || k < 0 || batch < 0 || m > INT32_MAX || n > INT32_MAX || k > INT32_MAX)
    return throw_error(env, true, "sgemm: m, n, k and batch must be non-negative 32-bit sizes");
  if (!fits(aOff, aStride, m * k, batch, aLen)) return throw_error(env, true, "sgemm: a is out of range");
  if (!fits(bOff, bStride, k * n, batch, bLen)) return throw_error(env, true, "sgemm: b is out of range");
  if (!fits(cOff, cStride, m * n, batch, cLen)) return throw_error(env, true, "sgemm: c is out of range");
  if (m == 0 || n == 0) return NULL;
  const int lda = transA ? (int)m : (int)k;
  const int ldb = transB ? (int)k : (int)n;
  for (int64_t i = 0; i < batch; i++) {
    float *ci = c + cOff + i * cStride;
    if (k == 0) {
      /* sgemm with k = 0 still scales C by beta; do it here so lda >= 1 never matters. */
      for (int64_t j = 0; j < m * n; j++) ci[j] = beta == 0 ? 0.0f : (float)beta * ci[j];
      continue;
    }
    gemm(transA, transB, (int)m, (int)n, (int)k, (float)alpha, a + aOff + i * aStride, lda, b + bOff + i * bStride,
         ldb, (float)beta, ci, (int)n);
  }
  return NULL;
}

static napi_value set_threads(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t threads = 0;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 1 ||
      napi_get_value_int32(env, argv[0], &threads) != napi_ok || threads < 1)
    return throw_error(env, false, "setThreads: expected a thread count >= 1");
  parallel_set_threads(threads);
  return NULL;
}

static napi_value blas_info(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value out, threads, corename, config;
  napi_create_object(env, &out);
  napi_create_int32(env, parallel_threads(), &threads);
  napi_create_string_utf8(env, openblas_get_corename(), NAPI_AUTO_LENGTH, &corename);
  napi_create_string_utf8(env, openblas_get_config(), NAPI_AUTO_LENGTH, &config);
  napi_set_named_property(env, out, "threads", threads);
  napi_set_named_property(env, out, "corename", corename);
  napi_set_named_property(env, out, "config", config);
  return out;
}

NAPI_MODULE_INIT() {
  gemm_init();
  napi_property_descriptor props[] = {
      {"sgemm", NULL, sgemm, NULL, NULL, NULL, napi_default, NULL},
      {"setThreads", NULL, set_threads, NULL, NULL, NULL, napi_default, NULL},
      {"info", NULL, blas_info, NULL, NULL, NULL, napi_default, NULL},
  };
  if (napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props) != napi_ok) return NULL;
  if (fused_define(env, exports) != napi_ok) return NULL;
  if (attention_define(env, exports) != napi_ok) return NULL;
  if (gelu_define(env, exports) != napi_ok) return NULL;
  if (layer_norm_define(env, exports) != napi_ok) return NULL;
  if (elementwise_define(env, exports) != napi_ok) return NULL;
  if (softmax_define(env, exports) != napi_ok) return NULL;
  if (recurrent_define(env, exports) != napi_ok) return NULL;
  if (decoder_attention_define(env, exports) != napi_ok) return NULL;
  if (segment_sum_define(env, exports) != napi_ok) return NULL;
  return exports;
}

/*
 * Whole-sequence GRU and LSTM layers for the tfjs wasm backend: the forward recurrence and its
 * backpropagation through time, each one call per layer, zero-copy on the wasm heap.
 *
 * Why: a recurrent layer written in tfjs ops costs 10-25 kernel dispatches per step and per
 * direction (the LSTM learner step ran ~4,700 kernels for 45 steps), each a pass over a [B, H]
 * block plus the dispatch; the arithmetic itself is small. Here a step is one sgemm
 * (h_{t-1} W_hh) and one pass over the step's gates. services/core/src/model/recurrent-kernels.ts
 * registers these as tfjs kernels; gru-layer.ts and lstm-layer.ts give the equations and keep the
 * same maths in tfjs ops for machines without the addon.
 *
 * Exports (synchronous). Every tensor is given as an element offset into one Float32Array `heap`
 * (the wasm heap); a mask offset of -1 means no masks. Rows are time-major (row t*B + r), gate
 * blocks [r | z | n] (GRU) and [i | f | g | o] (LSTM) of width H, W_hh is [H, G*H].
 *   gruForward(heap, a, w, bias, h0, mask, hs, gates, steps, batch, hidden, block)
 *     hs [T*B, H]; gates [T*B, 4H] = [r | z | n | u_n] for the backward pass
 *   gruBackward(heap, dy, w, h0, hs, gates, mask, da, dw, db, dh0, steps, batch, hidden)
 *   lstmForward(heap, a, w, bias, h0, c0, mask, out, cs, gates, tc, steps, batch, hidden, block)
 *     out [(T+1)*B, H] = every h_t, then the final c; cs [T*B, H] every c_t; gates [T*B, 4H] the
 *     activations i, f, g, o; tc [T*B, H] = tanh(c'_t)
 *   lstmBackward(heap, dy, w, h0, c0, out, cs, gates, tc, mask, da, dw, db, dh0, dc0,
 *                steps, batch, hidden)
 *     dy [(T+1)*B, H] is the gradient of `out` (its last B rows: of the final c)
 * `block` > 0 computes each step's h_{t-1} W_hh in sgemm calls of exactly `block` rows (the last
 * zero-padded): OpenBLAS picks its kernel by the call's size, so this keeps a row's bits
 * independent of the rows batched with it (blas-kernels.ts's batchInvariant). Masked steps
 * (m = 0) leave a row's state exactly as it was: s_t = s_{t-1} + m (s' - s_{t-1}).
 */
#include <cblas.h>
#include <math.h>
#include <node_api.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gate-math.h"
#include "gemm.h"
#include "recurrent.h"
#include "row-kernel.h"

#define MAX_ARGS 18

static napi_value fail(napi_env env, bool range, const char *msg) {
  if (range)
    napi_throw_range_error(env, NULL, msg);
  else
    napi_throw_type_error(env, NULL, msg);
  return NULL;
}

/* The call's arguments: the heap, then `nints` integers (offsets, -1 allowed, then counts). */
typedef struct {
  float *heap;
  size_t len;
  int64_t v[MAX_ARGS];
} call_args;

static bool read_args(napi_env env, napi_callback_info info, size_t nints, call_args *out, const char *fn) {
  size_t argc = nints + 1;
  napi_value argv[MAX_ARGS + 1];
  napi_typedarray_type type;
  void *data = NULL;
  bool is_ta = false;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != nints + 1) {
    fail(env, false, fn);
    return false;
  }
  if (napi_is_typedarray(env, argv[0], &is_ta) != napi_ok || !is_ta ||
      napi_get_typedarray_info(env, argv[0], &type, &out->len, &data, NULL, NULL) != napi_ok ||
      type != napi_float32_array) {
    fail(env, false, "recurrent kernels take the heap as a Float32Array");
    return false;
  }
  out->heap = (float *)data;
  for (size_t i = 0; i < nints; i++)
    if (napi_get_value_int64(env, argv[i + 1], &out->v[i]) != napi_ok) {
      fail(env, false, "recurrent kernels take integer offsets and counts");
      return false;
    }
  return true;
}

/* heap + offset when `count` floats from there lie inside the heap; else NULL (error thrown). */
static float *at(napi_env env, const call_args *c, int64_t offset, int64_t count) {
  if (offset < 0 || count < 0 || offset + count > (int64_t)c->len) {
    fail(env, true, "recurrent kernel: a tensor is out of range");
    return NULL;
  }
  return c->heap + offset;
}

/* The mask (rows floats), NULL when offset is -1; *ok is false when an error was thrown. */
static float *mask_at(napi_env env, const call_args *c, int64_t offset, int64_t rows, bool *ok) {
  *ok = true;
  if (offset == -1) return NULL;
  float *m = at(env, c, offset, rows);
  *ok = m != NULL;
  return m;
}

static bool counts_ok(napi_env env, int64_t steps, int64_t batch, int64_t hidden) {
  if (steps < 1 || batch < 1 || hidden < 1 || steps * batch > INT32_MAX || 4 * hidden > INT32_MAX) {
    fail(env, true, "recurrent kernel: steps, batch and hidden must be positive 32-bit sizes");
    return false;
  }
  return true;
}

/* The per-row gate loops are ROW_KERNELs (row-kernel.h): 2-3x faster gates on AVX-512. */

/* s = s_prev + m (s - s_prev): a masked step (m = 0) keeps the previous state exactly. */
ROW_KERNEL masked_row(int64_t n, float m, const float *restrict prev, float *restrict s) {
  for (int64_t j = 0; j < n; j++) s[j] = prev[j] + m * (s[j] - prev[j]);
}

/* One row of a GRU step: h' and the gates [r | z | n | u_n] from a, u = h W_hh + b_hh, h_prev. */
ROW_KERNEL gru_row(int64_t H, const float *restrict a, const float *restrict u, const float *restrict hp,
                    float *restrict h, float *restrict g) {
  for (int64_t j = 0; j < H; j++) {
    const float rg = sigmoid(a[j] + u[j]);
    const float zg = sigmoid(a[H + j] + u[H + j]);
    const float un = u[2 * H + j];
    const float ng = tanh_s(a[2 * H + j] + rg * un);
    h[j] = ng + zg * (hp[j] - ng);
    g[j] = rg;
    g[H + j] = zg;
    g[2 * H + j] = ng;
    g[3 * H + j] = un;
  }
}

/*
 * One row of the GRU backward at step t: from dh = dy + carry, the gate factors (gru-layer.ts)
 * give da, du, and carry becomes dh z~ (the sgemm adds du W_hh^T afterwards); m = 1 without
 * masks (the factors then equal the unmasked ones up to rounding).
 */
ROW_KERNEL gru_grad_row(int64_t H, float m, const float *restrict g, const float *restrict hp,
                         const float *restrict dy, float *restrict da, float *restrict du, float *restrict carry) {
  for (int64_t j = 0; j < H; j++) {
    const float rg = g[j], zg = g[H + j], ng = g[2 * H + j], un = g[3 * H + j];
    const float dh = dy[j] + carry[j];
    const float omz = 1 - zg;
    const float pn = omz * (1 - ng * ng) * m;
    const float pz = ((hp[j] - ng) * zg) * omz * m;
    const float pr = (omz * (1 - ng * ng)) * un * (rg * (1 - rg)) * m;
    da[j] = du[j] = dh * pr;
    da[H + j] = du[H + j] = dh * pz;
    da[2 * H + j] = dh * pn;
    du[2 * H + j] = dh * (pn * rg);
    carry[j] = dh * (1 - m * omz); /* z~ = 1 - m (1 - z) */
  }
}

/* One row of an LSTM step: h', c', the activations [i | f | g | o] and tanh c'. */
ROW_KERNEL lstm_row(int64_t H, const float *restrict a, const float *restrict u, const float *restrict cp,
                     float *restrict h, float *restrict c, float *restrict g, float *restrict tc) {
  for (int64_t j = 0; j < H; j++) {
    const float ig = sigmoid(a[j] + u[j]);
    const float fg = sigmoid(a[H + j] + u[H + j]);
    const float gg = tanh_s(a[2 * H + j] + u[2 * H + j]);
    const float og = sigmoid(a[3 * H + j] + u[3 * H + j]);
    const float cn = fg * cp[j] + ig * gg;
    const float th = tanh_s(cn);
    h[j] = og * th;
    c[j] = cn;
    g[j] = ig;
    g[H + j] = fg;
    g[2 * H + j] = gg;
    g[3 * H + j] = og;
    tc[j] = th;
  }
}

/*
 * One row of the LSTM backward at step t: from dh = dy + ch and dc = cc, the pre-activation
 * gradients da; cc becomes dL/dc_{t-1}, ch (1 - m) dh (the sgemm adds da W_hh^T afterwards).
 */
ROW_KERNEL lstm_grad_row(int64_t H, float m, const float *restrict g, const float *restrict tc,
                          const float *restrict cp, const float *restrict dy, float *restrict da, float *restrict ch,
                          float *restrict cc) {
  for (int64_t j = 0; j < H; j++) {
    const float ig = g[j], fg = g[H + j], gg = g[2 * H + j], og = g[3 * H + j], th = tc[j];
    const float dh = dy[j] + ch[j], dc = cc[j];
    /* gradients of h' and c' (a masked step passes dh, dc on to step t - 1 unchanged) */
    const float dhn = m * dh;
    const float dcn = m * dc + dhn * og * (1 - th * th);
    da[j] = (dcn * gg) * (ig * (1 - ig));
    da[H + j] = (dcn * cp[j]) * (fg * (1 - fg));
    da[2 * H + j] = (dcn * ig) * (1 - gg * gg);
    da[3 * H + j] = (dhn * th) * (og * (1 - og));
    cc[j] = (1 - m) * dc + dcn * fg;
    ch[j] = (1 - m) * dh;
  }
}

/*
 * u[m, n] = bias + h[m, k] w[k, n] for one step, in calls of `block` rows when block > 0 (the
 * last block through zero-padded scratch: pa [block, k], pc [block, n]).
 */
static void step_product(int m, int n, int k, const float *h, const float *w, const float *bias, float *u,
                         int block, float *pa, float *pc) {
  for (int r = 0; r < m; r++) memcpy(u + (size_t)r * n, bias, sizeof(float) * (size_t)n);
  if (block <= 0) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k, 1.0f, h, k, w, n, 1.0f, u, n);
    return;
  }
  const int full = m - m % block;
  for (int r = 0; r < full; r += block)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, block, n, k, 1.0f, h + (size_t)r * k, k, w, n, 1.0f,
                u + (size_t)r * n, n);
  const int tail = m - full;
  if (tail == 0) return;
  memset(pa, 0, sizeof(float) * (size_t)block * k);
  memset(pc, 0, sizeof(float) * (size_t)block * n);
  memcpy(pa, h + (size_t)full * k, sizeof(float) * (size_t)tail * k);
  memcpy(pc, u + (size_t)full * n, sizeof(float) * (size_t)tail * n);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, block, n, k, 1.0f, pa, k, w, n, 1.0f, pc, n);
  memcpy(u + (size_t)full * n, pc, sizeof(float) * (size_t)tail * n);
}

/* Scratch for one step's product: u [batch, n] and, when block > 0, the padded tail. */
static float *step_scratch(int batch, int n, int k, int block) {
  size_t extra = block > 0 ? (size_t)block * (k + n) : 0;
  return malloc(sizeof(float) * ((size_t)batch * n + extra));
}

/*
 * The weight and bias gradients from dp [T*B, n], the gradient of every step's u:
 * dw = sum_t h_{t-1}^T dp_t (h_{-1} = h0, then hs's rows), db = column sums (in double).
 */
static int weight_grads(int steps, int batch, int hidden, int n, const float *h0, const float *hs,
                        const float *dp, float *dw, float *db) {
  gemm(true, false, hidden, n, batch, 1.0f, h0, hidden, dp, n, 0.0f, dw, n);
  if (steps > 1) gemm(true, false, hidden, n, (steps - 1) * batch, 1.0f, hs, hidden, dp + (size_t)batch * n, n, 1.0f, dw, n);
  double *acc = calloc((size_t)n, sizeof(double));
  if (acc == NULL) return -1;
  const int64_t rows = (int64_t)steps * batch;
  for (int64_t r = 0; r < rows; r++)
    for (int j = 0; j < n; j++) acc[j] += dp[r * n + j];
  for (int j = 0; j < n; j++) db[j] = (float)acc[j];
  free(acc);
  return 0;
}

static napi_value gru_forward(napi_env env, napi_callback_info info) {
  call_args c;
  if (!read_args(env, info, 11, &c, "gruForward: expected 12 arguments")) return NULL;
  const int64_t T = c.v[7], B = c.v[8], H = c.v[9], block = c.v[10];
  if (!counts_ok(env, T, B, H)) return NULL;
  const int64_t rows = T * B, G = 3 * H;
  bool ok;
  float *a = at(env, &c, c.v[0], rows * G), *w = a ? at(env, &c, c.v[1], H * G) : NULL;
  float *bias = w ? at(env, &c, c.v[2], G) : NULL, *h0 = bias ? at(env, &c, c.v[3], B * H) : NULL;
  float *m = h0 ? mask_at(env, &c, c.v[4], rows, &ok) : NULL;
  if (h0 == NULL || !ok) return NULL;
  float *hs = at(env, &c, c.v[5], rows * H), *gates = hs ? at(env, &c, c.v[6], rows * 4 * H) : NULL;
  if (gates == NULL) return NULL;
  if (block < 0 || block > INT32_MAX) return fail(env, true, "gruForward: block must be >= 0");
  float *u = step_scratch((int)B, (int)G, (int)H, (int)block);
  if (u == NULL) return fail(env, true, "gruForward: out of memory");
  float *pa = u + B * G, *pc = pa + block * H;
  for (int64_t t = 0; t < T; t++) {
    const float *hp = t == 0 ? h0 : hs + (t - 1) * B * H;
    step_product((int)B, (int)G, (int)H, hp, w, bias, u, (int)block, pa, pc);
    for (int64_t r = 0; r < B; r++) {
      const int64_t row = t * B + r;
      gru_row(H, a + row * G, u + r * G, hp + r * H, hs + row * H, gates + row * 4 * H);
      if (m != NULL) masked_row(H, m[row], hp + r * H, hs + row * H);
    }
  }
  free(u);
  return NULL;
}

static napi_value gru_backward(napi_env env, napi_callback_info info) {
  call_args c;
  if (!read_args(env, info, 13, &c, "gruBackward: expected 14 arguments")) return NULL;
  const int64_t T = c.v[10], B = c.v[11], H = c.v[12];
  if (!counts_ok(env, T, B, H)) return NULL;
  const int64_t rows = T * B, G = 3 * H;
  bool ok;
  float *dy = at(env, &c, c.v[0], rows * H), *w = dy ? at(env, &c, c.v[1], H * G) : NULL;
  float *h0 = w ? at(env, &c, c.v[2], B * H) : NULL, *hs = h0 ? at(env, &c, c.v[3], rows * H) : NULL;
  float *gates = hs ? at(env, &c, c.v[4], rows * 4 * H) : NULL;
  float *m = gates ? mask_at(env, &c, c.v[5], rows, &ok) : NULL;
  if (gates == NULL || !ok) return NULL;
  float *da = at(env, &c, c.v[6], rows * G), *dw = da ? at(env, &c, c.v[7], H * G) : NULL;
  float *db = dw ? at(env, &c, c.v[8], G) : NULL, *carry = db ? at(env, &c, c.v[9], B * H) : NULL;
  if (carry == NULL) return NULL;
  float *du = malloc(sizeof(float) * (size_t)(rows * G));
  if (du == NULL) return fail(env, true, "gruBackward: out of memory");
  memset(carry, 0, sizeof(float) * (size_t)(B * H)); /* dL/dh_t through step t + 1 */
  for (int64_t t = T - 1; t >= 0; t--) {
    const float *hp = t == 0 ? h0 : hs + (t - 1) * B * H;
    for (int64_t r = 0; r < B; r++) {
      const int64_t row = t * B + r;
      gru_grad_row(H, m == NULL ? 1.0f : m[row], gates + row * 4 * H, hp + r * H, dy + row * H,
                   da + row * G, du + row * G, carry + r * H);
    }
    /* dh_{t-1} = dh_t z~_t + du_t W_hh^T */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)B, (int)H, (int)G, 1.0f, du + t * B * G, (int)G, w,
                (int)G, 1.0f, carry, (int)H);
  }
  const int err = weight_grads((int)T, (int)B, (int)H, (int)G, h0, hs, du, dw, db);
  free(du);
  if (err != 0) return fail(env, true, "gruBackward: out of memory");
  return NULL;
}

static napi_value lstm_forward(napi_env env, napi_callback_info info) {
  call_args c;
  if (!read_args(env, info, 14, &c, "lstmForward: expected 15 arguments")) return NULL;
  const int64_t T = c.v[10], B = c.v[11], H = c.v[12], block = c.v[13];
  if (!counts_ok(env, T, B, H)) return NULL;
  const int64_t rows = T * B, G = 4 * H;
  bool ok;
  float *a = at(env, &c, c.v[0], rows * G), *w = a ? at(env, &c, c.v[1], H * G) : NULL;
  float *bias = w ? at(env, &c, c.v[2], G) : NULL, *h0 = bias ? at(env, &c, c.v[3], B * H) : NULL;
  float *c0 = h0 ? at(env, &c, c.v[4], B * H) : NULL;
  float *m = c0 ? mask_at(env, &c, c.v[5], rows, &ok) : NULL;
  if (c0 == NULL || !ok) return NULL;
  float *out = at(env, &c, c.v[6], (rows + B) * H), *cs = out ? at(env, &c, c.v[7], rows * H) : NULL;
  float *gates = cs ? at(env, &c, c.v[8], rows * G) : NULL, *tc = gates ? at(env, &c, c.v[9], rows * H) : NULL;
  if (tc == NULL) return NULL;
  if (block < 0 || block > INT32_MAX) return fail(env, true, "lstmForward: block must be >= 0");
  float *u = step_scratch((int)B, (int)G, (int)H, (int)block);
  if (u == NULL) return fail(env, true, "lstmForward: out of memory");
  float *pa = u + B * G, *pc = pa + block * H;
  for (int64_t t = 0; t < T; t++) {
    const float *hp = t == 0 ? h0 : out + (t - 1) * B * H, *cp = t == 0 ? c0 : cs + (t - 1) * B * H;
    step_product((int)B, (int)G, (int)H, hp, w, bias, u, (int)block, pa, pc);
    for (int64_t r = 0; r < B; r++) {
      const int64_t row = t * B + r;
      lstm_row(H, a + row * G, u + r * G, cp + r * H, out + row * H, cs + row * H, gates + row * G, tc + row * H);
      if (m != NULL) {
        masked_row(H, m[row], hp + r * H, out + row * H);
        masked_row(H, m[row], cp + r * H, cs + row * H);
      }
    }
  }
  memcpy(out + rows * H, cs + (rows - B) * H, sizeof(float) * (size_t)(B * H));
  free(u);
  return NULL;
}

static napi_value lstm_backward(napi_env env, napi_callback_info info) {
  call_args c;
  if (!read_args(env, info, 17, &c, "lstmBackward: expected 18 arguments")) return NULL;
  const int64_t T = c.v[14], B = c.v[15], H = c.v[16];
  if (!counts_ok(env, T, B, H)) return NULL;
  const int64_t rows = T * B, G = 4 * H;
  bool ok;
  float *dy = at(env, &c, c.v[0], (rows + B) * H), *w = dy ? at(env, &c, c.v[1], H * G) : NULL;
  float *h0 = w ? at(env, &c, c.v[2], B * H) : NULL, *c0 = h0 ? at(env, &c, c.v[3], B * H) : NULL;
  float *out = c0 ? at(env, &c, c.v[4], (rows + B) * H) : NULL, *cs = out ? at(env, &c, c.v[5], rows * H) : NULL;
  float *gates = cs ? at(env, &c, c.v[6], rows * G) : NULL, *tc = gates ? at(env, &c, c.v[7], rows * H) : NULL;
  float *m = tc ? mask_at(env, &c, c.v[8], rows, &ok) : NULL;
  if (tc == NULL || !ok) return NULL;
  float *da = at(env, &c, c.v[9], rows * G), *dw = da ? at(env, &c, c.v[10], H * G) : NULL;
  float *db = dw ? at(env, &c, c.v[11], G) : NULL, *ch = db ? at(env, &c, c.v[12], B * H) : NULL;
  float *cc = ch ? at(env, &c, c.v[13], B * H) : NULL;
  if (cc == NULL) return NULL;
  memset(ch, 0, sizeof(float) * (size_t)(B * H));            /* dL/dh_t through step t + 1 */
  memcpy(cc, dy + rows * H, sizeof(float) * (size_t)(B * H)); /* dL/dc_t: the final c's, then through t + 1 */
  for (int64_t t = T - 1; t >= 0; t--) {
    const float *cp = t == 0 ? c0 : cs + (t - 1) * B * H;
    for (int64_t r = 0; r < B; r++) {
      const int64_t row = t * B + r;
      lstm_grad_row(H, m == NULL ? 1.0f : m[row], gates + row * G, tc + row * H, cp + r * H,
                    dy + row * H, da + row * G, ch + r * H, cc + r * H);
    }
    /* dh_{t-1} = (1 - m) dh_t + dpre_t W_hh^T */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)B, (int)H, (int)G, 1.0f, da + t * B * G, (int)G, w,
                (int)G, 1.0f, ch, (int)H);
  }
  if (weight_grads((int)T, (int)B, (int)H, (int)G, h0, out, da, dw, db) != 0)
    return fail(env, true, "lstmBackward: out of memory");
  return NULL;
}

napi_status recurrent_define(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"gruForward", NULL, gru_forward, NULL, NULL, NULL, napi_default, NULL},
      {"gruBackward", NULL, gru_backward, NULL, NULL, NULL, napi_default, NULL},
      {"lstmForward", NULL, lstm_forward, NULL, NULL, NULL, napi_default, NULL},
      {"lstmBackward", NULL, lstm_backward, NULL, NULL, NULL, napi_default, NULL},
  };
  return napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props);
}

/*
 * Binary elementwise Add, Sub and Multiply for the tfjs wasm backend, zero-copy on
 * Float32Arrays, split over the OpenBLAS threads:
 *   elementwise(op, a, ao, aMode, aPeriod, b, bo, bMode, bPeriod, out, oo, n)
 *     out[i] = a[ia(i)] op b[ib(i)] for i < n, op 0: +, 1: -, 2: *; an operand's mode says how
 *     its index follows i: 0 = i (as many elements as out), 1 = i mod period (a row repeated:
 *     [C] against [N, C]), 2 = i / period (each element repeated: [N, 1] against [N, C]),
 *     3 = 0 (a scalar; period ignored); at least one operand has mode 0. Each array is (Float32Array, offset) and must hold what
 *     the kernel touches from that offset, else a RangeError is thrown.
 *
 * Why: with two OpenBLAS threads the products take half their time, and tfjs's one-threaded
 * Add, Sub and Multiply (the residual adds, the gradients' sums, the loss's masks; ~100 calls a
 * learner step) became ~8% of it. Each output element is one IEEE float operation on the same
 * two inputs as tfjs-wasm's (XNNPACK's) kernel, so the results are bitwise those of tfjs, and of
 * one thread whatever the split.
 */
#include <node_api.h>
#include <stdbool.h>
#include <stdint.h>

#include "elementwise.h"
#include "napi-span.h"
#include "parallel.h"
#include "vexp.h"

/* Elements per segment when both operands have as many as the output. */
#define BLOCK 4096
/* The fewest elements worth a thread of their own (~20 us of work). */
#define MIN_ELEMENTS_PER_THREAD 65536

enum { OP_ADD, OP_SUB, OP_MUL };
enum { FULL, ROW, SPREAD, SCALAR };

/* The three loops of each op: vector op vector, vector op scalar, scalar op vector. */
#define LOOPS(name, OP)                                                                        \
  VECTOR_CLONES static void name##_vv(const float *a, const float *b, float *o, int64_t n) {   \
    for (int64_t i = 0; i < n; i++) o[i] = a[i] OP b[i];                                       \
  }                                                                                            \
  VECTOR_CLONES static void name##_vs(const float *a, float s, float *o, int64_t n) {          \
    for (int64_t i = 0; i < n; i++) o[i] = a[i] OP s;                                          \
  }                                                                                            \
  VECTOR_CLONES static void name##_sv(float s, const float *b, float *o, int64_t n) {          \
    for (int64_t i = 0; i < n; i++) o[i] = s OP b[i];                                          \
  }
LOOPS(add, +)
LOOPS(sub, -)
LOOPS(mul, *)

/* One call: the operands, their modes and periods, and the segment length the split uses. */
struct ew_job {
  int op;
  const float *a, *b;
  int a_mode, b_mode;
  int64_t a_period, b_period;
  float *out;
  int64_t n, seg;
};

static void vv(int op, const float *a, const float *b, float *o, int64_t n) {
  if (op == OP_ADD) add_vv(a, b, o, n);
  else if (op == OP_SUB) sub_vv(a, b, o, n);
  else mul_vv(a, b, o, n);
}

static void vs(int op, const float *a, float s, float *o, int64_t n) {
  if (op == OP_ADD) add_vs(a, s, o, n);
  else if (op == OP_SUB) sub_vs(a, s, o, n);
  else mul_vs(a, s, o, n);
}

static void sv(int op, float s, const float *b, float *o, int64_t n) {
  if (op == OP_ADD) add_sv(s, b, o, n);
  else if (op == OP_SUB) sub_sv(s, b, o, n);
  else mul_sv(s, b, o, n);
}

/* Segments [s0, s1): within a segment each operand is either contiguous or one repeated value. */
static void segments(void *arg, int64_t s0, int64_t s1) {
  const struct ew_job *j = arg;
  for (int64_t s = s0; s < s1; s++) {
    const int64_t begin = s * j->seg;
    const int64_t len = begin + j->seg < j->n ? j->seg : j->n - begin;
    float *o = j->out + begin;
    if (j->a_mode == SPREAD || j->a_mode == SCALAR)
      sv(j->op, j->a[j->a_mode == SCALAR ? 0 : s], j->b + begin, o, len);
    else if (j->b_mode == SPREAD || j->b_mode == SCALAR)
      vs(j->op, j->a + begin, j->b[j->b_mode == SCALAR ? 0 : s], o, len);
    else
      vv(j->op, j->a_mode == ROW ? j->a : j->a + begin, j->b_mode == ROW ? j->b : j->b + begin, o, len);
  }
}

/* The int64 at argv[i], false (with a RangeError thrown) outside [lo, INT32_MAX]. */
static bool int_at(napi_env env, napi_value *argv, int i, int64_t lo, int64_t *out) {
  if (napi_get_value_int64(env, argv[i], out) == napi_ok && *out >= lo && *out <= INT32_MAX) return true;
  napi_throw_range_error(env, NULL, "elementwise: op, modes, periods and n must be small non-negative integers");
  return false;
}

/* Elements an operand of this mode and period reads for n outputs. */
static int64_t operand_len(int64_t mode, int64_t period, int64_t n) {
  return mode == FULL ? n : mode == ROW ? period : mode == SCALAR ? 1 : (n + period - 1) / period;
}

static napi_value elementwise(napi_env env, napi_callback_info info) {
  napi_value argv[12];
  size_t argc = 12;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 12) {
    napi_throw_type_error(env, NULL, "elementwise: expected 12 arguments");
    return NULL;
  }
  int64_t op, am, ap, bm, bp, n;
  if (!int_at(env, argv, 0, 0, &op) || !int_at(env, argv, 3, 0, &am) || !int_at(env, argv, 4, 1, &ap) ||
      !int_at(env, argv, 7, 0, &bm) || !int_at(env, argv, 8, 1, &bp) || !int_at(env, argv, 11, 0, &n))
    return NULL;
  const bool a_period = am == ROW || am == SPREAD, b_period = bm == ROW || bm == SPREAD;
  if (op > OP_MUL || am > SCALAR || bm > SCALAR || (am != FULL && bm != FULL) || (a_period && n % ap != 0) ||
      (b_period && n % bp != 0)) {
    napi_throw_range_error(env, NULL, "elementwise: bad op or modes (one operand must be full, periods divide n)");
    return NULL;
  }
  const char *type_msg = "elementwise takes Float32Arrays", *range_msg = "elementwise: an array is out of range";
  const float *a = f32_span(env, argv[1], argv[2], operand_len(am, ap, n), type_msg, range_msg);
  const float *b = a == NULL ? NULL : f32_span(env, argv[5], argv[6], operand_len(bm, bp, n), type_msg, range_msg);
  float *out = b == NULL ? NULL : f32_span(env, argv[9], argv[10], n, type_msg, range_msg);
  if (out == NULL || n == 0) return NULL;
  /* a segment: a repeated row, the run of one spread element, or a block */
  const int64_t seg = a_period ? ap : b_period ? bp : BLOCK;
  struct ew_job job = {(int)op, a, b, (int)am, (int)bm, ap, bp, out, n, seg};
  const int64_t count = (n + seg - 1) / seg;
  const int64_t grain = seg >= MIN_ELEMENTS_PER_THREAD ? 1 : MIN_ELEMENTS_PER_THREAD / seg;
  parallel_for(count, grain, segments, &job);
  return NULL;
}

napi_status elementwise_define(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"elementwise", NULL, elementwise, NULL, NULL, NULL, napi_default, NULL},
  };
  return napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props);
}

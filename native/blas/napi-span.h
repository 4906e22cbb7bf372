/*
 * The argument checks the kernel files share: (Float32Array, offset) must hold `count` floats
 * from `offset` on, counts are non-negative 32-bit, and the argument count is exact. Why shared:
 * each kernel file took its arguments the same way, and a wasm-heap offset past the end must
 * throw, never read out of bounds.
 */
#ifndef RLAIF_NAPI_SPAN_H
#define RLAIF_NAPI_SPAN_H
#include <node_api.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Throws a RangeError; NULL, for `return range_error(...)` from a binding. */
static inline napi_value range_error(napi_env env, const char *msg) {
  napi_throw_range_error(env, NULL, msg);
  return NULL;
}

/* Throws a TypeError; NULL, for `return type_error(...)` from a binding. */
static inline napi_value type_error(napi_env env, const char *msg) {
  napi_throw_type_error(env, NULL, msg);
  return NULL;
}

/* Reads exactly argc arguments into argv; false (with a TypeError `fn` thrown) otherwise. */
static inline bool args(napi_env env, napi_callback_info info, size_t argc, napi_value *argv, const char *fn) {
  size_t got = argc;
  if (napi_get_cb_info(env, info, &got, argv, NULL, NULL) != napi_ok || got != argc) {
    type_error(env, fn);
    return false;
  }
  return true;
}

/* A count argument: an integer in [0, 2^31 - 1]. */
static inline bool count_arg(napi_env env, napi_value v, int64_t *out) {
  return napi_get_value_int64(env, v, out) == napi_ok && *out >= 0 && *out <= INT32_MAX;
}

/* The floats at (array, offset); NULL with a TypeError (`type_msg`) or RangeError (`range_msg`) thrown. */
static inline float *f32_span(napi_env env, napi_value array, napi_value offset, int64_t count,
                              const char *type_msg, const char *range_msg) {
  bool is_ta = false;
  napi_typedarray_type type;
  size_t len = 0;
  void *data = NULL;
  int64_t off = 0;
  if (napi_is_typedarray(env, array, &is_ta) != napi_ok || !is_ta ||
      napi_get_typedarray_info(env, array, &type, &len, &data, NULL, NULL) != napi_ok ||
      type != napi_float32_array) {
    napi_throw_type_error(env, NULL, type_msg);
    return NULL;
  }
  if (napi_get_value_int64(env, offset, &off) != napi_ok || off < 0 || off + count > (int64_t)len) {
    napi_throw_range_error(env, NULL, range_msg);
    return NULL;
  }
  return (float *)data + off;
}

#endif

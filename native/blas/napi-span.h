/*
 * The one check every kernel makes of its array arguments: (Float32Array, offset) must hold
 * `count` floats from `offset` on. Why shared: each kernel file took its arrays the same way, and
 * a wasm-heap offset past the end must throw, never read out of bounds.
 */
#ifndef RLAIF_NAPI_SPAN_H
#define RLAIF_NAPI_SPAN_H
#include <node_api.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

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

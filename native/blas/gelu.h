/* The one-pass GELU forward and backward (gelu.c), defined on the addon's exports by blas.c's module init. */
#ifndef RLAIF_GELU_H
#define RLAIF_GELU_H
#include <node_api.h>

napi_status gelu_define(napi_env env, napi_value exports);

#endif

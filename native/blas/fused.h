/* Fused elementwise kernels (fused.c), defined on the addon's exports by blas.c's module init. */
#ifndef RLAIF_FUSED_H
#define RLAIF_FUSED_H
#include <node_api.h>

napi_status fused_define(napi_env env, napi_value exports);

#endif

/* LayerNorm forward and backward (layer-norm.c), defined on the addon's exports by blas.c's module init. */
#ifndef RLAIF_LAYER_NORM_H
#define RLAIF_LAYER_NORM_H
#include <node_api.h>

napi_status layer_norm_define(napi_env env, napi_value exports);

#endif

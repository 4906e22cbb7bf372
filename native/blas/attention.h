/* Causal self-attention kernels (attention.c), defined on the addon's exports by blas.c's module init. */
#ifndef RLAIF_ATTENTION_H
#define RLAIF_ATTENTION_H
#include <node_api.h>

napi_status attention_define(napi_env env, napi_value exports);

#endif

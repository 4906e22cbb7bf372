/* The row softmax with log-normaliser (softmax.c), defined on the addon's exports by blas.c's module init. */
#ifndef RLAIF_SOFTMAX_H
#define RLAIF_SOFTMAX_H
#include <node_api.h>

napi_status softmax_define(napi_env env, napi_value exports);

#endif

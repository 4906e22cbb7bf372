/* Whole-sequence GRU and LSTM kernels (recurrent.c), defined on the addon's exports by blas.c's module init. */
#ifndef RLAIF_RECURRENT_H
#define RLAIF_RECURRENT_H
#include <node_api.h>

napi_status recurrent_define(napi_env env, napi_value exports);

#endif

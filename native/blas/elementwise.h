/* Binary elementwise kernels (elementwise.c), defined on the addon's exports by blas.c's module init. */
#ifndef RLAIF_ELEMENTWISE_H
#define RLAIF_ELEMENTWISE_H
#include <node_api.h>

napi_status elementwise_define(napi_env env, napi_value exports);

#endif

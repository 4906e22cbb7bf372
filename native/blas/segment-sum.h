/* The row segment sum (segment-sum.c), defined on the addon's exports by blas.c's module init. */
#ifndef RLAIF_SEGMENT_SUM_H
#define RLAIF_SEGMENT_SUM_H
#include <node_api.h>

napi_status segment_sum_define(napi_env env, napi_value exports);

#endif

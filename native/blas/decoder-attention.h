/* The Seq2Seq decoder's attention and tanh (decoder-attention.c), defined on the addon's exports by blas.c's module init. */
#ifndef RLAIF_DECODER_ATTENTION_H
#define RLAIF_DECODER_ATTENTION_H
#include <node_api.h>

napi_status decoder_attention_define(napi_env env, napi_value exports);

#endif

{
  "targets": [
    {
      "target_name": "rlaif_blas",
      "sources": ["blas.c", "fused.c", "recurrent.c", "attention.c", "gelu.c", "layer-norm.c", "elementwise.c", "softmax.c", "decoder-attention.c", "parallel.c", "gemm.c", "segment-sum.c"],
      "include_dirs": ["/usr/include/x86_64-linux-gnu/openblas-pthread", "/usr/include/openblas"],
      "cflags": ["-O3", "-std=c11", "-fno-trapping-math", "-Wall", "-Wextra"],
      "libraries": ["-lopenblas", "-lm", "-lpthread"]
    }
  ]
}

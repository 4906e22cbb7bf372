/*
 * ROW_KERNEL: a static void function compiled for AVX-512, AVX2 and baseline x86-64 and picked at
 * load time (GCC's target_clones, an ifunc), for the addon's per-row loops (recurrent.c's gates,
 * decoder-attention.c's products). Without FMA contraction (-std=c11 keeps it off) every width
 * computes the same float operations, so results do not depend on the machine's vector width.
 */
#ifndef RLAIF_ROW_KERNEL_H
#define RLAIF_ROW_KERNEL_H

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define ROW_KERNEL __attribute__((target_clones("avx512f", "avx2", "default"))) static void
#else
#define ROW_KERNEL static void
#endif

#endif

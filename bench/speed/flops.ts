/**
 * Analytic FLOP count of the Transformer's learner step, for its effective GFLOP/s. Only the
 * matrix products are counted (2 FLOPs per multiply-add); elementwise work, softmax and the
 * optimiser are left out, so the figure is what a BLAS-bound implementation could be judged by.
 *
 * Forward, per input position and layer (C = dModel, T = positions, V = vocab):
 *   qkv 2·C·3C + attention output 2·C·C + MLP 2·C·4C + 2·4C·C = 24·C²
 *   scores q·kᵀ 2·T·C and weights·v 2·T·C over all heads (the full T × T, as both sides compute it) = 4·T·C
 * plus the head 2·C·V per position. Backward: every product y = a·b needs ∂a = ∂y·bᵀ and
 * ∂b = aᵀ·∂y, two products of the same size, so a learner step is 3 × the forward.
 */
import type { TransformerConfig } from "../../services/core/src/model/transformer-config.js";

/** Forward-pass matmul FLOPs of the GPT on a [rows, positions] batch. */
export function transformerForwardFlops(c: TransformerConfig, rows: number, positions: number): number {
  const perPosition =
    c.nLayers * (24 * c.dModel * c.dModel + 4 * positions * c.dModel) + 2 * c.dModel * c.vocabSize;
  return rows * positions * perPosition;
}

/** Forward + backward matmul FLOPs of one learner step (3 × the forward, see the module doc). */
export function transformerStepFlops(c: TransformerConfig, rows: number, positions: number): number {
  return 3 * transformerForwardFlops(c, rows, positions);
}

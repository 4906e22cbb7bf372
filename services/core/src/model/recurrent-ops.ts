/**
 * The flavours of primitives a recurrent pass runs on (the recurrent LM and the Seq2Seq GRUs):
 * `train` — layers.ts's custom gradients and the whole-sequence GRU and LSTM layers with their
 * written-out backpropagation through time; `inference` — fused kernels and the same layers (their
 * forward is the plain recurrence); `reference` — stock autodiff step by step, what the tests compare
 * the others with. tanh is 2σ(2x) − 1 in the fast flavours (sigmoid is a fast kernel on wasm), one
 * fused kernel in `inference` when the addon is loaded.
 */
import * as tf from "@tensorflow/tfjs";
import type { ForwardOptions } from "./causal-lm.js";
import { FUSED, hasFusedKernel, runFused } from "./fused-kernels.js";
import { gruLayer, gruLayerStepwise } from "./gru-layer.js";
import * as L from "./layers.js";
import { lstmLayer, lstmLayerStepwise } from "./lstm-layer.js";
import { type RecurrentOps, sigmoidTanh } from "./recurrent-cells.js";

/** tanh for passes nobody differentiates: one fused kernel with the addon, else 2σ(2x) − 1 in tfjs ops. */
function inferenceTanh<T extends tf.Tensor>(x: T): T {
  return x.dtype === "float32" && hasFusedKernel(FUSED.tanh)
    ? runFused<T>(FUSED.tanh, { x })
    : sigmoidTanh(x);
}

/** The recurrent primitives by `ForwardOptions.ops`. */
export const RECURRENT_OPS: Record<NonNullable<ForwardOptions["ops"]>, RecurrentOps> = {
  train: {
    ...L.TRAIN_OPS,
    tanh: sigmoidTanh,
    gruLayer: (a, w, b, h0, m) => gruLayer(a, w, b, h0, m, sigmoidTanh),
    lstmLayer: (a, w, b, h0, c0, m) => lstmLayer(a, w, b, h0, c0, m, sigmoidTanh),
  },
  inference: {
    ...L.INFERENCE_OPS,
    tanh: inferenceTanh,
    gruLayer: (a, w, b, h0, m) => gruLayer(a, w, b, h0, m, sigmoidTanh),
    lstmLayer: (a, w, b, h0, c0, m) => lstmLayer(a, w, b, h0, c0, m, sigmoidTanh),
  },
  reference: {
    ...L.REFERENCE_OPS,
    tanh: tf.tanh,
    gruLayer: (a, w, b, h0, m) => gruLayerStepwise(a, w, b, h0, m, tf.tanh, L.linearReference),
    lstmLayer: (a, w, b, h0, c0, m) => lstmLayerStepwise(a, w, b, h0, c0, m, tf.tanh, L.linearReference),
  },
};

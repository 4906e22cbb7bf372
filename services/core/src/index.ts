/**
 * The shared core of the rlaif services: one import point for the bus, the gRPC layer, config,
 * errors, weights distribution, the model and the learning code. This file only re-exports.
 */
export * from "./bus/bus.js";
export * from "./bus/memory-bus.js";
export * from "./bus/nats-bus.js";
export * from "./bus/nats-server.js";
export * from "./bus/subjects.js";
export * from "./config/load-config.js";
export * from "./config/settings.js";
export * from "./config/settings.js";
export * from "./errors.js";
export * from "./grpc/adapter.js";
export * from "./grpc/client.js";
export * from "./grpc/rules.js";
export * from "./grpc/server.js";
export * from "./grpc/status.js";
export * from "./grpc/validation.js";
export * from "./hash.js";
export * from "./learn/baseline.js";
export * from "./learn/kl.js";
export * from "./learn/optimizer.js";
export * from "./learn/reinforce.js";
export * from "./learn/returns.js";
export * from "./learn/schedule.js";
export * from "./model/backend.js";
export * from "./model/checkpoint.js";
export * from "./model/config.js";
export * from "./model/corpus.js";
export * from "./model/loss.js";
export * from "./model/pretrain.js";
export * from "./model/rng.js";
export * from "./model/sampler.js";
export * from "./model/tokenizer.js";
export * from "./model/transformer.js";
export * from "./weights/weights-channel.js";

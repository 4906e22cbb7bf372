import { defineConfig } from "vitest/config";

// Tests run in forked processes: tfjs and grpc-js keep process-wide state that should not leak
// between files, and the wasm backend is single-threaded anyway.
export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    pool: "forks",
    testTimeout: 60_000,
    hookTimeout: 60_000,
  },
});

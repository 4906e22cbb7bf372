/**
 * The OpenBLAS kernel family chosen from the CPU's flags (native-blas.ts `coreTypeFor`), which
 * keeps a DYNAMIC_ARCH OpenBLAS off its SSE3 fallback on CPUs newer than the library.
 */
import { describe, expect, it } from "vitest";
import { coreTypeFor } from "../services/core/src/model/native-blas.js";

const cpuinfo = (flags: string) => `processor\t: 0\nmodel\t\t: 207\nflags\t\t: ${flags}\n\nprocessor\t: 1\n`;

describe("native-blas core type", () => {
  it("core type - AVX-512 F/CD/BW/DQ/VL picks SkylakeX", () => {
    expect(coreTypeFor(cpuinfo("fpu sse3 fma avx avx2 avx512f avx512dq avx512cd avx512bw avx512vl"))).toBe(
      "SkylakeX",
    );
  });
  it("core type - AVX2 and FMA without full AVX-512 picks Haswell", () => {
    expect(coreTypeFor(cpuinfo("fpu sse3 fma avx avx2 avx512f"))).toBe("Haswell");
  });
  it("core type - no AVX2 or no flags line leaves OpenBLAS to decide", () => {
    expect(coreTypeFor(cpuinfo("fpu sse3 avx"))).toBeUndefined();
    expect(coreTypeFor("processor\t: 0\n")).toBeUndefined();
  });
});

#!/usr/bin/env node
// Entry point of the `rlaif` command. The project ships TypeScript sources and runs them
// through tsx's loader, so a fresh clone needs `npm ci` and nothing else (no build step).
import { register } from "tsx/esm/api";

register();
await import("../services/cli/main.ts");

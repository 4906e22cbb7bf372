/**
 * Child process of the "guard" test: it starts `sleep` as a guarded child, the way `rlaif up`
 * starts its services, prints the sleeper's pid and waits, so the test can SIGKILL this process
 * (no cleanup code runs) and check that the guard stops the sleeper.
 */
import { spawn } from "node:child_process";
import { childInstance } from "../../services/cluster/service-process.js";

const sleeper = spawn("sleep", ["1000"], { stdio: "ignore", detached: true });
childInstance(sleeper);
process.stdout.write(`${sleeper.pid}\n`);
setInterval(() => undefined, 1000);

/**
 * Fault test: kill -9 the Rollout worker holding unacked jobs in the middle of a run (while the Rollout holds unacked jobs),
 * restart it on the same address after 5 s; its jobs come back after their ack wait. The run completes, the Optimizer applies
 * every sample exactly once, and the final checkpoint loads.
 */
import { faultSuite } from "./helpers/fault-suite.js";

faultSuite("rollout", "the Rollout worker holding unacked jobs");

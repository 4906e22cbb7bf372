/**
 * Fault test: kill -9 a Policy replica mid-request in the middle of a run (while the Rollout holds unacked jobs),
 * restart it on the same address after 5 s; the Rollout retries it by deadline and waits for the restarted replica's weights. The run completes, the Optimizer applies
 * every sample exactly once, and the final checkpoint loads.
 */
import { faultSuite } from "./helpers/fault-suite.js";

faultSuite("policy", "a Policy replica mid-request");

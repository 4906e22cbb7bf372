/**
 * Fault test: kill -9 the Feedback service in the middle of a run (while the Rollout holds unacked jobs),
 * restart it on the same address after 5 s; the Rollout retries the scorer by deadline, so the step trains on every sample. The run completes, the Optimizer applies
 * every sample exactly once, and the final checkpoint loads.
 */
import { faultSuite } from "./helpers/fault-suite.js";

faultSuite("feedback", "the Feedback service");

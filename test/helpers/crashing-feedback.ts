/**
 * Child process of the feedback-check tests: a FeedbackService whose GetInfo answers like the
 * built-in one but whose process exits in the middle of the first Score call (a scorer crashing
 * on a batch), so the suite must report the failed rows instead of hanging. Prints
 * "listening on ADDR" once it serves.
 */
import { implement, startServer } from "../../services/core/src/grpc/server.js";
import { FeedbackService, ruleFeedbackService } from "../../services/feedback/feedback-service.js";

const rules = ruleFeedbackService();
const server = await startServer({
  host: "127.0.0.1",
  port: 0,
  services: [
    implement(FeedbackService, {
      ...rules,
      score() {
        process.exit(3);
      },
    }),
  ],
});
process.stdout.write(`listening on ${server.address}\n`);

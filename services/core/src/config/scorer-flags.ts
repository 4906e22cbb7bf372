/**
 * The flags that choose and configure the built-in Feedback's scorer (rules, LLM judge, reward
 * model and their weights), in one place: the CLI's command specs take them, and `rlaif up` hands
 * them to the Feedback process it starts, so a scorer flag added here reaches every way of running
 * the built-in Feedback.
 */
import { ConfigError } from "../errors.js";
import { SETTINGS, type ServiceSettings } from "./settings.js";

/** The LLM judge as the Feedback's scorer (feedback/judge-scorer.ts). */
const JUDGE_FLAGS = [
  "judge-url",
  "judge-model",
  "judge-mode",
  "judge-rubric-file",
  "judge-api-key-env",
  "judge-api-key-file",
  "judge-timeout-ms",
  "judge-temperature",
  "judge-weight",
] as const;

/** Every flag of the built-in scorer: the weighted rules, the reward model, the judge. */
export const SCORER_FLAGS = [
  "feedback-rules",
  "reward-model",
  "reward-model-weight",
  ...JUDGE_FLAGS,
] as const;

/**
 * `--flag value` for each service setting among `flags` that differs from its default: how a
 * parent process (`rlaif up`) passes on what it was told without restating every default.
 */
export function changedSettingArgs(s: ServiceSettings, flags: readonly string[]): string[] {
  return SETTINGS.filter((x) => x.path.startsWith("services.") && flags.includes(x.flag)).flatMap((x) => {
    const value = (s as Record<string, unknown>)[x.path.slice("services.".length)];
    return value === x.default || value === undefined ? [] : [`--${x.flag}`, String(value)];
  });
}

/**
 * An external FeedbackService (`--feedback-address`) and a built-in model scorer both named: a
 * ConfigError rather than the built-in one silently ignored.
 */
export function checkOneFeedback(s: ServiceSettings): void {
  const inProcess = [s.judgeUrl && "--judge-url", s.rewardModel && "--reward-model"].filter(Boolean);
  if (s.feedbackAddress && inProcess.length > 0) {
    throw new ConfigError(
      `--feedback-address names an external FeedbackService, and ${inProcess.join(" and ")} a built-in scorer: give one of them`,
    );
  }
}

/**
 * The `rlaif` command: dispatches to a command module, turns configuration mistakes into a
 * message that says what to fix (exit 2) and other failures into one error line (exit 1).
 */
import { didYouMean } from "../core/src/config/did-you-mean.js";
import { ConfigError, StoppedBySignalError, ValidationError } from "../core/src/errors.js";
import { RLAIF_VERSION } from "../core/src/version.js";
import { type Command, helpText, parseCommand } from "./args.js";
import { labelSpec, trainRmSpec } from "./rm-specs.js";
import {
  cancelSpec,
  exportSpec,
  feedbackCheckSpec,
  keygenSpec,
  natsInitSpec,
  pretrainSpec,
  reportSpec,
  runSpec,
  sampleSpec,
  serveSpec,
  statusSpec,
  trainSpec,
  upSpec,
} from "./specs.js";

const COMMANDS: readonly Command[] = [
  { spec: trainSpec, load: async () => (await import("./commands/train.js")).trainCommand },
  { spec: serveSpec, load: async () => (await import("./commands/serve.js")).serveCommand },
  { spec: upSpec, load: async () => (await import("./commands/up.js")).upCommand },
  { spec: runSpec, load: async () => (await import("./commands/run.js")).runCommand },
  { spec: statusSpec, load: async () => (await import("./commands/status.js")).statusCommand },
  { spec: cancelSpec, load: async () => (await import("./commands/cancel.js")).cancelCommand },
  { spec: pretrainSpec, load: async () => (await import("./commands/pretrain.js")).pretrainCommand },
  { spec: sampleSpec, load: async () => (await import("./commands/sample.js")).sampleCommand },
  { spec: exportSpec, load: async () => (await import("./commands/export.js")).exportCommand },
  {
    spec: feedbackCheckSpec,
    load: async () => (await import("./commands/feedback-check.js")).feedbackCheckCommand,
  },
  { spec: keygenSpec, load: async () => (await import("./commands/keygen.js")).keygenCommand },
  { spec: natsInitSpec, load: async () => (await import("./commands/nats-init.js")).natsInitCommand },
  { spec: reportSpec, load: async () => (await import("./commands/run-report.js")).runReportCommand },
  { spec: labelSpec, load: async () => (await import("./commands/label.js")).labelCommand },
  { spec: trainRmSpec, load: async () => (await import("./commands/train-rm.js")).trainRmCommand },
];

function usage(): string {
  const rows = COMMANDS.map((c) => `  ${c.spec.name.padEnd(10)}${c.spec.summary}`).join("\n");
  return `rlaif ${RLAIF_VERSION} — reinforcement learning from AI feedback, as gRPC + NATS services\n\nUsage: rlaif <command> [flags]\n\nCommands:\n${rows}\n\nRun 'rlaif <command> --help' for a command's flags, 'rlaif --version' for the version.\n`;
}

/** What `--version` prints, on `rlaif` and on every command. */
function versionLine(): string {
  return `rlaif ${RLAIF_VERSION}\n`;
}

/** The command (and service, for `serve`) whose help to point at. */
function helpName(name: string, rest: string[]): string {
  const spec = COMMANDS.find((c) => c.spec.name === name)?.spec;
  const variant = rest[0] !== undefined && spec?.variants?.[rest[0]];
  return variant ? variant.name : name;
}

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === "--help" || name === "-h" || name === "help") {
    process.stdout.write(usage());
    return name ? 0 : 2;
  }
  if (name === "--version" || name === "-v") {
    process.stdout.write(versionLine());
    return 0;
  }
  const command = COMMANDS.find((c) => c.spec.name === name);
  if (!command) {
    const hint = didYouMean(
      name,
      COMMANDS.map((c) => c.spec.name),
    );
    process.stderr.write(`rlaif: unknown command "${name}"${hint}\n\n${usage()}`);
    return 2;
  }
  let parsing = true;
  try {
    const parsed = parseCommand(command.spec, rest);
    parsing = false;
    if (parsed.help) {
      process.stdout.write(helpText(parsed.spec));
      return 0;
    }
    if (parsed.version) {
      process.stdout.write(versionLine());
      return 0;
    }
    await (await command.load()).run(parsed);
    return 0;
  } catch (err) {
    if (err instanceof StoppedBySignalError) {
      process.stderr.write(`rlaif ${name}: ${err.message}\n`);
      return err.exitCode;
    }
    if (err instanceof ConfigError || err instanceof ValidationError) {
      // A flag or config-file mistake points at the help; a later refusal already says what to do.
      const hint = parsing ? `\nRun 'rlaif ${helpName(name, rest)} --help' for the valid flags.` : "";
      process.stderr.write(`rlaif ${name}: ${err.message}${hint}\n`);
      return 2;
    }
    process.stderr.write(`rlaif ${name}: ${err instanceof Error ? err.message : String(err)}\n`);
    if (process.env.RLAIF_DEBUG && err instanceof Error) process.stderr.write(`${err.stack}\n`);
    return 1;
  }
}

const code = await main(process.argv.slice(2));
process.exitCode = code;
// Every command closes what it opened; should a library still hold a handle, do not hang.
setTimeout(() => process.exit(code), 3000).unref();

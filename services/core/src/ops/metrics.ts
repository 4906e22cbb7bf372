/**
 * The process's Prometheus registry and what the services record into it. A metric is created
 * (and so exported) on its first use, so each process exports only what it runs: a Policy pod
 * has no optimizer series. Run-labelled series are kept for the {@link RUNS_KEPT} newest runs an
 * Optimizer process trained, so `run_id` cardinality stays bounded however long it serves.
 */
import { Counter, Gauge, Histogram, Registry } from "prom-client";
import type { StepMetrics } from "../../gen/rlaif/common/v1/types_pb.js";
import { METRIC_CATALOG, type MetricKey, type MetricKeyOf, type MetricSpec } from "./metric-catalog.js";

/** The registry every service of this process records into and `/metrics` serves. */
export const METRICS_REGISTRY = new Registry();

/** Runs whose series an Optimizer process keeps; the oldest one's go when another starts. */
export const RUNS_KEPT = 4;

const made = new Map<MetricKey, Counter | Gauge | Histogram>();

type ScrapedKey = MetricKeyOf<"gauge"> | MetricKeyOf<"counter">;
/** Reads label sets and their values at scrape time (see {@link observeAtScrape}). */
export type ScrapeReader = () => ReadonlyArray<readonly [Record<string, string>, number]>;
const scrapeReaders = new Map<MetricKey, Set<ScrapeReader>>();

/** A scraped metric's collect hook: its values are exactly what its readers say now. */
function collectFrom(key: MetricKey, m: Counter | Gauge): void {
  const readers = scrapeReaders.get(key);
  if (!readers) return;
  m.reset();
  for (const read of readers) for (const [labels, value] of read()) m.inc(labels, value);
}

function make(key: MetricKey): Counter | Gauge | Histogram {
  const spec: MetricSpec = METRIC_CATALOG[key];
  const base = {
    name: spec.name,
    help: spec.help,
    labelNames: [...spec.labels],
    registers: [METRICS_REGISTRY],
  };
  if (spec.type === "counter") {
    return new Counter({
      ...base,
      collect(this: Counter) {
        collectFrom(key, this);
      },
    });
  }
  if (spec.type === "gauge") {
    return new Gauge({
      ...base,
      collect(this: Gauge) {
        collectFrom(key, this);
      },
    });
  }
  return new Histogram({ ...base, buckets: [...(spec.buckets ?? [])] });
}

function get(key: MetricKey): Counter | Gauge | Histogram {
  let m = made.get(key);
  if (!m) {
    m = make(key);
    made.set(key, m);
  }
  return m;
}

/** The counter of catalog entry `key`, created and registered on first use. */
export function counter(key: MetricKeyOf<"counter">): Counter {
  return get(key) as Counter;
}
/** The gauge of catalog entry `key`, created and registered on first use. */
export function gauge(key: MetricKeyOf<"gauge">): Gauge {
  return get(key) as Gauge;
}
/** The histogram of catalog entry `key`, created and registered on first use. */
export function histogram(key: MetricKeyOf<"histogram">): Histogram {
  return get(key) as Histogram;
}

const runs: string[] = [];

/** Note that `runId` records; past {@link RUNS_KEPT} runs the oldest run's series are removed. */
function keepRun(runId: string): void {
  if (runs.includes(runId)) return;
  runs.push(runId);
  while (runs.length > RUNS_KEPT) forgetRun(runs.shift() as string);
}

/** Remove every series labelled with `runId` (its metrics stay in Prometheus's history). */
function forgetRun(runId: string): void {
  for (const [key, m] of made) {
    if (!(METRIC_CATALOG[key].labels as readonly string[]).includes("run_id")) continue;
    // Series are keyed by their whole label set: find this run's in the metric's own state.
    const hashes = (m as unknown as { hashMap: Record<string, { labels: Record<string, string> }> }).hashMap;
    for (const { labels } of Object.values(hashes)) if (labels.run_id === runId) m.remove(labels);
  }
}

/** Record one step's StepMetrics (the Optimizer, after each step; see run-driver.ts). */
export function recordStep(m: StepMetrics, stepSeconds: number): void {
  const run = { run_id: m.runId };
  keepRun(m.runId);
  gauge("step").set(run, m.step);
  counter("steps").inc(run);
  gauge("rewardMean").set(run, m.meanReward);
  gauge("rewardStd").set(run, m.stdReward);
  gauge("kl").set(run, m.kl);
  gauge("entropy").set(run, m.entropy);
  gauge("tokensPerSecond").set(run, m.tokensPerSecond);
  counter("trajectories").inc(run, m.trajectories);
  histogram("stepDuration").observe(run, stepSeconds);
  gauge("staleness").set(run, m.sampleStaleness);
  m.stalenessHistogram.forEach((n, lag) => {
    counter("samplesByStaleness").inc({ ...run, staleness: String(lag) }, n);
  });
  for (const [cause, n] of Object.entries(m.excludedByCause)) counter("excluded").inc({ ...run, cause }, n);
  for (const [cause, n] of Object.entries(m.droppedByCause)) counter("dropped").inc({ ...run, cause }, n);
  counter("deadLetters").inc(run, m.deadLettered);
  for (const [queue, n] of Object.entries(m.queueDepths)) gauge("queueDepth").set({ queue }, n);
  gauge("weightsVersion").set(run, Number(m.weightsVersion));
  counter("weightsBytes").inc(run, Number(m.weightsBytesPublished));
}

/** Record one weights publish of `runId` that took `seconds`. */
export function recordWeightsPublish(runId: string, seconds: number): void {
  keepRun(runId);
  histogram("weightsPublish").observe({ run_id: runId }, seconds);
}

/**
 * Export a value read at scrape time as a gauge or counter: `read` returns the value per label set
 * (a counter's must only grow); several readers of one metric add up (replicas, workers of one
 * process). Why at scrape time: the figures already live in the services' own state
 * (RolloutCounters, the replica's version), so nothing on their hot path changes. Returns the
 * function that stops reading (a closed server's figures leave the export).
 */
export function observeAtScrape(key: ScrapedKey, read: ScrapeReader): () => void {
  get(key);
  const readers = scrapeReaders.get(key) ?? new Set<ScrapeReader>();
  scrapeReaders.set(key, readers);
  readers.add(read);
  return () => {
    readers.delete(read);
  };
}

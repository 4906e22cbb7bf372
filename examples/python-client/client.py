#!/usr/bin/python3
"""Drive rlaif from Python: ask a Policy what it serves, sample from it, and train a short run.

    ./gen.sh
    /usr/bin/python3 client.py --policy 127.0.0.1:50051 --optimizer 127.0.0.1:50054

Calls Policy GetInfo and Generate, then Optimizer StartRun (3 steps of 2 prompts x 2 samples by
default), streams WatchMetrics and prints the reward curve (step, mean reward, KL to the reference),
and ends with GetStatus's final state. Ctrl-C (SIGINT) while the run trains cancels it (CancelRun)
instead of leaving it running on the Optimizer. Exits 0 when the run succeeded, 1 when it did not
or a call failed, 2 on bad arguments, 130 when interrupted.
"""
import argparse
import sys

import grpc

from rlaif_client import stubs
from rlaif_client.channel import address_arg, connect, describe_rpc_error
from rlaif_client.errors import ClientError


def int_in(low, high):
    """argparse type: a whole number in low..high, else a message saying what is allowed."""

    def parse(value):
        try:
            n = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f'"{value}" is not a whole number') from None
        if high is not None and not low <= n <= high:
            raise argparse.ArgumentTypeError(f"must be in {low}..{high}, got {n}")
        if n < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {n}")
        return n

    return parse


positive_int = int_in(1, None)


def parse_args(argv):
    """The command line, checked (argparse exits 2 naming a bad flag)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--policy", type=address_arg, required=True, help="host:port of a Policy service")
    p.add_argument("--optimizer", type=address_arg, required=True, help="host:port of an Optimizer service")
    p.add_argument("--steps", type=positive_int, default=3, help="optimizer steps of the run (default 3)")
    p.add_argument("--prompts-per-step", type=positive_int, default=2, help="prompts per step (default 2)")
    p.add_argument("--samples-per-prompt", type=positive_int, default=2, help="samples per prompt (default 2)")
    p.add_argument("--max-new-tokens", type=positive_int, default=8, help="tokens per completion (default 8)")
    p.add_argument(
        "--prompt",
        action="append",
        default=[],
        help="a training prompt (repeatable; default: the Optimizer's built-in prompts)",
    )
    p.add_argument("--seed", type=int_in(0, 0xFFFFFFFF), default=1, help="seed of the sampler and the run (default 1)")
    p.add_argument("--connect-timeout", type=float, default=10.0, help="seconds to wait for each service")
    p.add_argument("--run-timeout", type=float, default=600.0, help="seconds the whole run may take")
    return p.parse_args(argv)


def call(what, fn, *args, **kwargs):
    """Run one RPC, turning a gRPC failure into a ClientError naming the call."""
    try:
        return fn(*args, **kwargs)
    except grpc.RpcError as err:
        raise describe_rpc_error(what, err) from None


def enum_name(enum, value, prefix):
    """RUN_STATE_SUCCEEDED -> SUCCEEDED (and an unknown number as such, for newer servers)."""
    try:
        return enum.Name(value).removeprefix(prefix)
    except ValueError:
        return str(value)


def show_policy(api, channel, args):
    """GetInfo, then two samples of one prompt from Generate."""
    policy = api.policy_pb2_grpc.PolicyServiceStub(channel)
    info = call("Policy GetInfo", policy.GetInfo, api.policy_pb2.GetInfoRequest(), timeout=30)
    print(
        f"policy {args.policy}: {info.model_kind}, {info.parameter_count} parameters, vocab {info.vocab_size},"
        f" context {info.context_length}, backend {info.backend}, weights version {info.weights_version}"
        f" (reference {info.reference_version})"
    )
    prompt = args.prompt[0] if args.prompt else "The film was"
    sampling = api.types_pb2.SamplingParams(max_new_tokens=args.max_new_tokens, seed=args.seed)
    request = api.policy_pb2.GenerateRequest(prompts=[prompt], samples_per_prompt=2, sampling=sampling)
    res = call("Policy Generate", policy.Generate, request, timeout=60)
    print(f"generate: {len(res.completions)} samples of {prompt!r} with weights version {res.weights_version}")
    for c in res.completions:
        mean_logprob = sum(c.logprobs) / len(c.logprobs) if c.logprobs else 0.0
        finish = enum_name(api.types_pb2.FinishReason, c.finish_reason, "FINISH_REASON_")
        print(f"  [{c.sample_index}] {c.text!r} ({len(c.tokens)} tokens, {finish}, mean log-prob {mean_logprob:.3f})")


def train(api, channel, args):
    """StartRun, WatchMetrics to the end (or Ctrl-C: CancelRun), GetStatus; the exit status."""
    optimizer = api.optimizer_pb2_grpc.OptimizerServiceStub(channel)
    config = api.types_pb2.RunConfig(
        steps=args.steps,
        prompts_per_step=args.prompts_per_step,
        samples_per_prompt=args.samples_per_prompt,
        sampling=api.types_pb2.SamplingParams(max_new_tokens=args.max_new_tokens),
        seed=args.seed,
        prompts=args.prompt,
    )
    started = call("Optimizer StartRun", optimizer.StartRun, api.optimizer_pb2.StartRunRequest(config=config), timeout=60)
    run_id = started.run_id
    print(f"run {run_id}: {args.steps} steps of {args.prompts_per_step} prompts x {args.samples_per_prompt} samples")
    print(f"{'step':>4}  {'mean_reward':>11}  {'kl':>9}")
    stream = optimizer.WatchMetrics(api.optimizer_pb2.WatchMetricsRequest(run_id=run_id), timeout=args.run_timeout)
    interrupted = False
    try:
        for update in stream:
            m = update.metrics
            print(f"{m.step:>4}  {m.mean_reward:>11.4f}  {m.kl:>9.4f}", flush=True)
    except grpc.RpcError as err:
        raise describe_rpc_error("Optimizer WatchMetrics", err) from None
    except KeyboardInterrupt:
        # The run lives on the Optimizer: stop it there rather than leave it training unwatched.
        stream.cancel()
        interrupted = True
        req = api.optimizer_pb2.CancelRunRequest(run_id=run_id)
        res = call("Optimizer CancelRun", optimizer.CancelRun, req, timeout=60)
        state = enum_name(api.optimizer_pb2.RunState, res.state, "RUN_STATE_")
        print(f"interrupted: CancelRun stopped run {run_id} after step {res.step} ({state})", file=sys.stderr)
    status = call(
        "Optimizer GetStatus", optimizer.GetStatus, api.optimizer_pb2.GetStatusRequest(run_id=run_id), timeout=30
    )
    state = enum_name(api.optimizer_pb2.RunState, status.state, "RUN_STATE_")
    line = f"final: run {status.run_id} {state} after {status.step} steps"
    if status.HasField("summary"):
        s = status.summary
        line += (
            f", {s.trajectories} trajectories, mean reward {s.first_mean_reward:.4f} -> {s.last_mean_reward:.4f},"
            f" final KL {s.final_kl:.4f}, weights version {s.final_weights_version}, {s.wall_seconds:.1f} s"
        )
    if status.error:
        line += f", error: {status.error}"
    print(line)
    if interrupted:
        return 130
    return 0 if status.state == api.optimizer_pb2.RUN_STATE_SUCCEEDED else 1


def main(argv):
    """Run the whole tour; the exit status."""
    args = parse_args(argv)
    try:
        api = stubs.load()
        policy_channel = connect(args.policy, "Policy", args.connect_timeout)
        optimizer_channel = connect(args.optimizer, "Optimizer", args.connect_timeout)
        with policy_channel, optimizer_channel:
            show_policy(api, policy_channel, args)
            return train(api, optimizer_channel, args)
    except ClientError as err:
        print(f"client.py: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

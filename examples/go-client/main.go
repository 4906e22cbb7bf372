// Command go-client drives rlaif from Go: it asks a Policy what it serves, samples from it, and
// trains a short run through the Optimizer, printing the run's reward curve and final state.
//
//	./build.sh
//	.build/go-client -policy 127.0.0.1:50051 -optimizer 127.0.0.1:50054
//
// It exists to show that the API is usable from a second language with nothing but the .proto
// files and Debian's Go packages (see README.md). Ctrl-C while the run trains cancels it
// (CancelRun). Exit status: 0 when the run succeeded, 1 when it did not or a call failed, 2 on bad
// flags, 130 when interrupted.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
)

// prompts collects the repeatable -prompt flag.
type prompts []string

func (p *prompts) String() string     { return strings.Join(*p, ", ") }
func (p *prompts) Set(v string) error { *p = append(*p, v); return nil }

// options are the command-line settings.
type options struct {
	policy, optimizer                     string
	steps, promptsPerStep, samplesPerStep uint
	maxNewTokens                          uint
	prompts                               prompts
	seed                                  uint64
	connectTimeout, runTimeout            time.Duration
}

func parseFlags(args []string) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("go-client", flag.ContinueOnError)
	fs.StringVar(&o.policy, "policy", "", "host:port of a Policy service (required)")
	fs.StringVar(&o.optimizer, "optimizer", "", "host:port of an Optimizer service (required)")
	fs.UintVar(&o.steps, "steps", 3, "optimizer steps of the run")
	fs.UintVar(&o.promptsPerStep, "prompts-per-step", 2, "prompts per step")
	fs.UintVar(&o.samplesPerStep, "samples-per-prompt", 2, "samples per prompt")
	fs.UintVar(&o.maxNewTokens, "max-new-tokens", 8, "tokens per completion")
	fs.Var(&o.prompts, "prompt", "a training prompt (repeatable; default: the Optimizer's built-in prompts)")
	fs.Uint64Var(&o.seed, "seed", 1, "seed of the sampler and the run")
	fs.DurationVar(&o.connectTimeout, "connect-timeout", 10*time.Second, "how long to wait for each service")
	fs.DurationVar(&o.runTimeout, "run-timeout", 10*time.Minute, "how long the whole run may take")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	for name, v := range map[string]string{"-policy": o.policy, "-optimizer": o.optimizer} {
		if err := checkAddress(v); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
	}
	for name, v := range map[string]uint{
		"-steps": o.steps, "-prompts-per-step": o.promptsPerStep,
		"-samples-per-prompt": o.samplesPerStep, "-max-new-tokens": o.maxNewTokens,
	} {
		if v < 1 {
			return nil, fmt.Errorf("%s must be at least 1", name)
		}
	}
	if o.seed > 0xFFFFFFFF {
		return nil, fmt.Errorf("-seed must be in 0..4294967295, got %d", o.seed)
	}
	return o, nil
}

func checkAddress(v string) error {
	host, port, err := net.SplitHostPort(v)
	n, perr := strconv.Atoi(port)
	if err != nil || host == "" || perr != nil || n < 1 || n > 65535 {
		return fmt.Errorf("%q is not host:port (e.g. 127.0.0.1:50051)", v)
	}
	return nil
}

// dial connects to one service, failing after the timeout with a message naming it.
func dial(address, service string, timeout time.Duration) (*grpc.ClientConn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	conn, err := grpc.DialContext(ctx, address, grpc.WithInsecure(), grpc.WithBlock())
	if errors.Is(err, context.DeadlineExceeded) {
		return nil, fmt.Errorf("cannot reach the %s service at %s: no connection within %s (is `rlaif serve %s` or `rlaif up` running there?)",
			service, address, timeout, strings.ToLower(service))
	}
	return conn, err
}

func run(o *options) (bool, error) {
	policy, err := dial(o.policy, "Policy", o.connectTimeout)
	if err != nil {
		return false, err
	}
	defer policy.Close()
	optimizer, err := dial(o.optimizer, "Optimizer", o.connectTimeout)
	if err != nil {
		return false, err
	}
	defer optimizer.Close()
	if err := listServices(policy, o.policy); err != nil {
		return false, err
	}
	if err := showPolicy(policy, o); err != nil {
		return false, err
	}
	return train(optimizer, o)
}

func main() {
	o, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "go-client: %v\n", err)
		os.Exit(2)
	}
	ok, err := run(o)
	if errors.Is(err, errInterrupted) {
		os.Exit(130)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "go-client: %v\n", err)
		os.Exit(1)
	}
	if !ok {
		os.Exit(1)
	}
}

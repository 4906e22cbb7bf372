package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"time"

	"google.golang.org/grpc"
	rpb "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	commonv1 "rlaif.local/gen/commonv1"
	optimizerv1 "rlaif.local/gen/optimizerv1"
	policyv1 "rlaif.local/gen/policyv1"
)

// callError names the failed call, its status code and the server's message.
func callError(what string, err error) error {
	st := status.Convert(err)
	return fmt.Errorf("%s failed: %s: %s", what, st.Code(), st.Message())
}

// listServices asks server reflection with grpc-go's own (stock) v1alpha client.
func listServices(conn *grpc.ClientConn, address string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := rpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		return callError("reflection ServerReflectionInfo", err)
	}
	req := &rpb.ServerReflectionRequest{MessageRequest: &rpb.ServerReflectionRequest_ListServices{ListServices: "*"}}
	if err := stream.Send(req); err != nil {
		return callError("reflection list_services", err)
	}
	res, err := stream.Recv()
	if err != nil {
		return callError("reflection list_services", err)
	}
	_ = stream.CloseSend()
	var names []string
	for _, s := range res.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	sort.Strings(names)
	fmt.Printf("services of %s (reflection v1alpha): %s\n", address, strings.Join(names, ", "))
	return nil
}

func enumName(name, prefix string) string { return strings.TrimPrefix(name, prefix) }

func showPolicy(conn *grpc.ClientConn, o *options) error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	policy := policyv1.NewPolicyServiceClient(conn)
	info, err := policy.GetInfo(ctx, &policyv1.GetInfoRequest{})
	if err != nil {
		return callError("Policy GetInfo", err)
	}
	fmt.Printf("policy %s: %s, %d parameters, vocab %d, context %d, backend %s, weights version %d (reference %d)\n",
		o.policy, info.GetModelKind(), info.GetParameterCount(), info.GetVocabSize(), info.GetContextLength(),
		info.GetBackend(), info.GetWeightsVersion(), info.GetReferenceVersion())
	prompt := "The film was"
	if len(o.prompts) > 0 {
		prompt = o.prompts[0]
	}
	res, err := policy.Generate(ctx, &policyv1.GenerateRequest{
		Prompts:          []string{prompt},
		SamplesPerPrompt: 2,
		Sampling:         &commonv1.SamplingParams{MaxNewTokens: proto.Uint32(uint32(o.maxNewTokens)), Seed: proto.Uint64(o.seed)},
	})
	if err != nil {
		return callError("Policy Generate", err)
	}
	fmt.Printf("generate: %d samples of %q with weights version %d\n", len(res.GetCompletions()), prompt,
		res.GetWeightsVersion())
	for _, c := range res.GetCompletions() {
		mean := 0.0
		for _, lp := range c.GetLogprobs() {
			mean += float64(lp) / float64(len(c.GetLogprobs()))
		}
		fmt.Printf("  [%d] %q (%d tokens, %s, mean log-prob %.3f)\n", c.GetSampleIndex(), c.GetText(), len(c.GetTokens()),
			enumName(c.GetFinishReason().String(), "FINISH_REASON_"), mean)
	}
	return nil
}

func train(conn *grpc.ClientConn, o *options) (bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), o.runTimeout)
	defer cancel()
	optimizer := optimizerv1.NewOptimizerServiceClient(conn)
	config := &commonv1.RunConfig{
		Steps:            proto.Uint32(uint32(o.steps)),
		PromptsPerStep:   proto.Uint32(uint32(o.promptsPerStep)),
		SamplesPerPrompt: proto.Uint32(uint32(o.samplesPerStep)),
		Sampling:         &commonv1.SamplingParams{MaxNewTokens: proto.Uint32(uint32(o.maxNewTokens))},
		Seed:             proto.Uint64(o.seed),
		Prompts:          o.prompts,
	}
	started, err := optimizer.StartRun(ctx, &optimizerv1.StartRunRequest{Config: config})
	if err != nil {
		return false, callError("Optimizer StartRun", err)
	}
	fmt.Printf("run %s: %d steps of %d prompts x %d samples\n", started.GetRunId(), o.steps, o.promptsPerStep, o.samplesPerStep)
	fmt.Printf("%4s  %11s  %9s\n", "step", "mean_reward", "kl")
	// Ctrl-C ends the watch; the run lives on the Optimizer, so it is cancelled there too.
	watchCtx, stopWatch := signal.NotifyContext(ctx, os.Interrupt)
	defer stopWatch()
	stream, err := optimizer.WatchMetrics(watchCtx, &optimizerv1.WatchMetricsRequest{RunId: started.GetRunId()})
	if err != nil {
		return false, callError("Optimizer WatchMetrics", err)
	}
	interrupted := false
	for {
		update, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil && watchCtx.Err() != nil && ctx.Err() == nil {
			interrupted = true
			if err := cancelRun(ctx, optimizer, started.GetRunId()); err != nil {
				return false, err
			}
			break
		}
		if err != nil {
			return false, callError("Optimizer WatchMetrics", err)
		}
		m := update.GetMetrics()
		fmt.Printf("%4d  %11.4f  %9.4f\n", m.GetStep(), m.GetMeanReward(), m.GetKl())
	}
	st, err := optimizer.GetStatus(ctx, &optimizerv1.GetStatusRequest{RunId: started.GetRunId()})
	if err != nil {
		return false, callError("Optimizer GetStatus", err)
	}
	line := fmt.Sprintf("final: run %s %s after %d steps", st.GetRunId(), enumName(st.GetState().String(), "RUN_STATE_"),
		st.GetStep())
	if s := st.GetSummary(); s != nil {
		line += fmt.Sprintf(", %d trajectories, mean reward %.4f -> %.4f, final KL %.4f, weights version %d, %.1f s",
			s.GetTrajectories(), s.GetFirstMeanReward(), s.GetLastMeanReward(), s.GetFinalKl(),
			s.GetFinalWeightsVersion(), s.GetWallSeconds())
	}
	if st.GetError() != "" {
		line += ", error: " + st.GetError()
	}
	fmt.Println(line)
	if interrupted {
		return false, errInterrupted
	}
	return st.GetState() == optimizerv1.RunState_RUN_STATE_SUCCEEDED, nil
}

// errInterrupted reports a run cancelled by Ctrl-C (exit status 130, as a shell would give).
var errInterrupted = errors.New("interrupted")

func cancelRun(ctx context.Context, optimizer optimizerv1.OptimizerServiceClient, runID string) error {
	res, err := optimizer.CancelRun(ctx, &optimizerv1.CancelRunRequest{RunId: runID})
	if err != nil {
		return callError("Optimizer CancelRun", err)
	}
	fmt.Fprintf(os.Stderr, "interrupted: CancelRun stopped run %s after step %d (%s)\n", runID, res.GetStep(),
		enumName(res.GetState().String(), "RUN_STATE_"))
	return nil
}

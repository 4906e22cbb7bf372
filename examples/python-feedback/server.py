#!/usr/bin/env python3
"""An external AI feedback service for rlaif, written in Python.

It implements rlaif.feedback.v1.FeedbackService from the repository's proto/ files, so a run can
use it instead of the built-in scorer with no code change:

    python3 examples/python-feedback/server.py --port 50070 &
    npx rlaif train --feedback-address 127.0.0.1:50070

The scoring rule is deliberately simple (a stand-in for an LLM judge or a reward model): the
reward is the share of completion words that appear in a small list of "kind" words, minus a
penalty for completions without letters. Python stubs are generated at start-up from proto/ with
grpc_tools into a temporary directory (Debian: python3-grpcio python3-grpc-tools).
"""
import argparse
import importlib
import os
import re
import sys
import tempfile
from concurrent import futures

import grpc
from grpc_tools import protoc

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_ROOT = os.path.normpath(os.path.join(HERE, "..", "..", "proto"))
KIND_WORDS = {"good", "great", "love", "happy", "kind", "nice", "best", "well", "glad", "fine", "beautiful"}
SCORER_ID = "python-kind-words"
SCORER_VERSION = "1"


def load_stubs():
    """Generate the feedback stubs from proto/ into a temp dir and import them."""
    out = tempfile.mkdtemp(prefix="rlaif-py-")
    proto = os.path.join(PROTO_ROOT, "rlaif", "feedback", "v1", "feedback.proto")
    rc = protoc.main(["protoc", f"-I{PROTO_ROOT}", f"--python_out={out}", f"--grpc_python_out={out}", proto])
    if rc != 0:
        sys.exit(f"protoc failed ({rc}) for {proto}")
    sys.path.insert(0, out)
    pb2 = importlib.import_module("rlaif.feedback.v1.feedback_pb2")
    pb2_grpc = importlib.import_module("rlaif.feedback.v1.feedback_pb2_grpc")
    return pb2, pb2_grpc


def score_text(text):
    """Share of kind words among the words of `text`, and why."""
    words = re.findall(r"[a-z']+", text.lower())
    if not words:
        return -1.0, "no words"
    kind = [w for w in words if w in KIND_WORDS]
    return len(kind) / len(words), f"{len(kind)} kind word(s) of {len(words)}: {' '.join(kind) or '-'}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True, help="port to listen on (0 picks a free one)")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind")
    args = parser.parse_args()
    pb2, pb2_grpc = load_stubs()

    class Feedback(pb2_grpc.FeedbackServiceServicer):
        def Score(self, request, context):
            if len(request.items) == 0:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "items: must have at least 1 item")
            scores = []
            for item in request.items:
                reward, why = score_text(item.completion)
                scores.append(pb2.Score(reward=reward, rationale=why))
            return pb2.ScoreResponse(scores=scores, scorer_id=SCORER_ID, scorer_version=SCORER_VERSION)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb2_grpc.add_FeedbackServiceServicer_to_server(Feedback(), server)
    port = server.add_insecure_port(f"{args.host}:{args.port}")
    server.start()
    print(f"listening on {args.host}:{port}", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""An external AI feedback service for rlaif, written in Python.

It implements rlaif.feedback.v1.FeedbackService from the repository's proto/ files, with the whole
contract of docs/feedback-contract.md (statuses, idempotency keys, GetInfo), so a run can use it
instead of the built-in scorer with no code change:

    python3 examples/python-feedback/server.py --port 50070 &
    npx rlaif train --feedback-address 127.0.0.1:50070

The scoring rule is deliberately simple (a stand-in for an LLM judge or a reward model): the
reward is the share of completion words that appear in a small list of "kind" words, -1 for a
completion without words. It abstains on text in another script (letters, none of them Latin:
it only knows English) and reports an error for a completion longer than it reads
(MAX_CHARS, as a model scorer fails past its context). Python stubs are generated at start-up from proto/ with grpc_tools into a
temporary directory (Debian: python3-grpcio python3-grpc-tools).
"""
import argparse
import collections
import hashlib
import importlib
import os
import re
import sys
import tempfile
import threading
from concurrent import futures

import grpc
from grpc_tools import protoc

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_ROOT = os.path.normpath(os.path.join(HERE, "..", "..", "proto"))
KIND_WORDS = {"good", "great", "love", "happy", "kind", "nice", "best", "well", "glad", "fine", "beautiful"}
SCORER_ID = "python-kind-words"
SCORER_VERSION = "2"
MAX_BATCH_ITEMS = 256
MAX_CHARS = 4000
MAX_KEY_BYTES = 256
MAX_TEXT_BYTES = 16384  # the contract's limit on a prompt and on a completion (INVALID_ARGUMENT past it)
CACHE_KEYS = 4096


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


def score_text(pb2, text):
    """The Score of `text`: OK with the share of kind words, ABSTAIN on another script, ERROR past MAX_CHARS."""
    if len(text) > MAX_CHARS:
        why = f"the completion has {len(text)} characters, this scorer reads at most {MAX_CHARS}"
        return pb2.Score(status=pb2.SCORE_STATUS_ERROR, error=why)
    letters = [c for c in text if c.isalpha()]
    if letters and not any("a" <= c.lower() <= "z" for c in letters):
        return pb2.Score(status=pb2.SCORE_STATUS_ABSTAIN, rationale="no Latin letters: this scorer only knows English")
    words = re.findall(r"[a-z']+", text.lower())
    if not words:
        return pb2.Score(status=pb2.SCORE_STATUS_OK, reward=-1.0, rationale="no words")
    kind = [w for w in words if w in KIND_WORDS]
    why = f"{len(kind)} kind word(s) of {len(words)}: {' '.join(kind) or '-'}"
    return pb2.Score(status=pb2.SCORE_STATUS_OK, reward=len(kind) / len(words), rationale=why)


class ScoreCache:
    """Scores by idempotency key, with the texts' digest so a key reused for other text is refused."""

    def __init__(self, capacity):
        self.capacity = capacity
        self.entries = collections.OrderedDict()
        self.lock = threading.Lock()

    def lookup(self, key, digest):
        """The cached Score, None when the key is new, or ValueError when it was used for other text."""
        with self.lock:
            entry = self.entries.get(key)
            if entry is None:
                return None
            if entry[0] != digest:
                raise ValueError(f'"{key}" was already used for a different prompt or completion')
            self.entries.move_to_end(key)
            return entry[1]

    def store(self, key, digest, score, pb2):
        """Remember an OK or ABSTAIN score (an ERROR is not a score: a retry may succeed)."""
        if score.status == pb2.SCORE_STATUS_ERROR:
            return
        with self.lock:
            self.entries[key] = (digest, score)
            self.entries.move_to_end(key)
            while len(self.entries) > self.capacity:
                self.entries.popitem(last=False)


def digest_of(item):
    """SHA-256 of the item's prompt, a NUL, and its completion."""
    return hashlib.sha256(item.prompt.encode() + b"\0" + item.completion.encode()).hexdigest()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True, help="port to listen on (0 picks a free one)")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind")
    args = parser.parse_args()
    pb2, pb2_grpc = load_stubs()
    cache = ScoreCache(CACHE_KEYS)

    class Feedback(pb2_grpc.FeedbackServiceServicer):
        def GetInfo(self, request, context):
            return pb2.GetInfoResponse(
                scorer_id=SCORER_ID,
                scorer_version=SCORER_VERSION,
                description="share of kind words among the completion's words (English only)",
                reward_range=pb2.RewardRange(min=-1.0, max=1.0),
                deterministic=True,
                max_batch_items=MAX_BATCH_ITEMS,
                token_rewards=False,
            )

        def Score(self, request, context):
            n = len(request.items)
            if n == 0:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "items: must have at least 1 item")
            if n > MAX_BATCH_ITEMS:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"items: has {n} items, at most {MAX_BATCH_ITEMS}")
            scores, seen = [], {}
            for i, item in enumerate(request.items):
                for name in ("prompt", "completion"):
                    size = len(getattr(item, name).encode())
                    if size > MAX_TEXT_BYTES:
                        context.abort(
                            grpc.StatusCode.INVALID_ARGUMENT,
                            f"items[{i}].{name}: has {size} bytes, at most {MAX_TEXT_BYTES}",
                        )
                key, digest = item.idempotency_key, digest_of(item)
                field = f"items[{i}].idempotency_key"
                if len(key.encode()) > MAX_KEY_BYTES:
                    context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{field}: must be at most {MAX_KEY_BYTES} bytes")
                if key and seen.get(key, digest) != digest:
                    context.abort(grpc.StatusCode.INVALID_ARGUMENT, f'{field}: "{key}" is used for two different items')
                seen[key] = digest
                try:
                    score = cache.lookup(key, digest) if key else None
                except ValueError as err:
                    context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{field}: {err}")
                if score is None:
                    score = score_text(pb2, item.completion)
                    if key:
                        cache.store(key, digest, score, pb2)
                echoed = pb2.Score()
                echoed.CopyFrom(score)
                echoed.idempotency_key = key
                scores.append(echoed)
            return pb2.ScoreResponse(scores=scores, scorer_id=SCORER_ID, scorer_version=SCORER_VERSION)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb2_grpc.add_FeedbackServiceServicer_to_server(Feedback(), server)
    port = server.add_insecure_port(f"{args.host}:{args.port}")
    server.start()
    print(f"listening on {args.host}:{port}", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()

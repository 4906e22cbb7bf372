"""Imports the stubs that gen.sh generated, from gen/ or from $RLAIF_PY_STUBS.

The generated modules import each other by their proto path (`rlaif.common.v1.types_pb2`), so the
stubs directory has to be on sys.path; doing it here keeps that detail out of the programs.
"""
import importlib
import os
import sys
from types import SimpleNamespace

from .errors import ClientError

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DIR = os.path.join(os.path.dirname(HERE), "gen")


def stubs_dir():
    """Where the generated stubs are: $RLAIF_PY_STUBS, else gen/ next to this package."""
    return os.environ.get("RLAIF_PY_STUBS") or DEFAULT_DIR


def _import(name):
    directory = stubs_dir()
    if not os.path.isdir(os.path.join(directory, "rlaif")):
        raise ClientError(f"no generated stubs in {directory}: run examples/python-client/gen.sh first")
    if directory not in sys.path:
        sys.path.insert(0, directory)
    try:
        return importlib.import_module(name)
    except ImportError as err:
        raise ClientError(f"cannot import {name} from {directory} ({err}): re-run gen.sh") from err


def load():
    """The rlaif API: types_pb2, policy_pb2(_grpc) and optimizer_pb2(_grpc)."""
    return SimpleNamespace(
        types_pb2=_import("rlaif.common.v1.types_pb2"),
        policy_pb2=_import("rlaif.policy.v1.policy_pb2"),
        policy_pb2_grpc=_import("rlaif.policy.v1.policy_pb2_grpc"),
        optimizer_pb2=_import("rlaif.optimizer.v1.optimizer_pb2"),
        optimizer_pb2_grpc=_import("rlaif.optimizer.v1.optimizer_pb2_grpc"),
    )


def load_reflection(api):
    """The server reflection API, "v1" (grpc.reflection.v1) or "v1alpha" (what older tools speak)."""
    if api not in ("v1", "v1alpha"):
        raise ClientError(f'reflection API must be "v1" or "v1alpha", got "{api}"')
    return SimpleNamespace(
        pb2=_import(f"grpc_reflection_{api}.reflection_pb2"),
        pb2_grpc=_import(f"grpc_reflection_{api}.reflection_pb2_grpc"),
    )

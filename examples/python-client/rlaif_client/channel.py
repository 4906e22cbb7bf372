"""Opening channels to rlaif services, with the checks a command line wants.

gRPC channels connect lazily and retry forever, so a wrong address would otherwise surface as a
DEADLINE_EXCEEDED on the first call. `connect` waits for the channel to be ready for a bounded
time and says which service at which address did not answer.
"""
import argparse
import re

import grpc

from .errors import ClientError

_ADDRESS = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$")


def address_arg(value):
    """argparse type: `value` if it is host:port (a bracketed IPv6 host is fine)."""
    m = _ADDRESS.match(value)
    if not m or not 0 < int(m.group(2)) < 65536:
        raise argparse.ArgumentTypeError(f'"{value}" is not host:port (e.g. 127.0.0.1:50051)')
    return value


def connect(address, service, timeout_s):
    """An insecure channel to `address`; `service` names it in errors: "Policy", "Optimizer", or ""."""
    channel = grpc.insecure_channel(address)
    try:
        grpc.channel_ready_future(channel).result(timeout=timeout_s)
    except grpc.FutureTimeoutError:
        channel.close()
        what = f"the {service} service" if service else "a gRPC server"
        hint = f"rlaif serve {service.lower()}" if service else "rlaif serve <service>"
        raise ClientError(
            f"cannot reach {what} at {address}: no connection within {timeout_s:g} s"
            f" (is `{hint}` or `rlaif up` running there?)"
        ) from None
    return channel


def describe_rpc_error(what, err):
    """A ClientError for a failed call: which call, the status code and the server's message."""
    code = err.code().name if hasattr(err, "code") else "UNKNOWN"
    details = err.details() if hasattr(err, "details") else str(err)
    return ClientError(f"{what} failed: {code}: {details}")

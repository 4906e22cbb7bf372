#!/usr/bin/python3
"""Explore an rlaif service through gRPC server reflection alone, without its .proto files.

    ./gen.sh
    /usr/bin/python3 reflect.py 127.0.0.1:50051
    /usr/bin/python3 reflect.py 127.0.0.1:50051 --describe rlaif.policy.v1.PolicyService.Generate

Lists the services (list_services), and for each --describe SYMBOL (a method, service, message
or enum) fetches the file that declares it and its imports (file_containing_symbol), loads them
into a fresh descriptor pool and prints what it is: a method's request and response messages with
their fields, a service's methods, a message's fields, an enum's values. --api v1alpha speaks the
older reflection API that many existing tools still use.
"""
import argparse
import sys

import grpc
from google.protobuf import descriptor, descriptor_pb2, descriptor_pool

from rlaif_client import stubs
from rlaif_client.channel import address_arg, connect, describe_rpc_error
from rlaif_client.errors import ClientError


def status_name(code):
    """NOT_FOUND for 5: reflection errors carry the numeric gRPC status code."""
    names = {c.value[0]: c.name for c in grpc.StatusCode}
    return names.get(code, str(code))


class Reflector:
    """One ServerReflectionInfo stream per request (the API is a bidirectional stream)."""

    def __init__(self, channel, api):
        self._pb2 = api.pb2
        self._stub = api.pb2_grpc.ServerReflectionStub(channel)

    def _ask(self, what, **request):
        req = self._pb2.ServerReflectionRequest(**request)
        try:
            answers = list(self._stub.ServerReflectionInfo(iter([req]), timeout=10))
        except grpc.RpcError as err:
            raise describe_rpc_error(f"reflection {what}", err) from None
        if len(answers) != 1:
            raise ClientError(f"reflection {what}: expected one answer to one request, got {len(answers)}")
        [res] = answers
        if res.HasField("error_response"):
            e = res.error_response
            raise ClientError(f"reflection {what}: {status_name(e.error_code)}: {e.error_message}")
        return res

    def services(self):
        """Full names of every service the server lists."""
        res = self._ask("list_services", list_services="*")
        return [s.name for s in res.list_services_response.service]

    def pool_with(self, symbol):
        """A descriptor pool holding the file that declares `symbol` and everything it imports."""
        res = self._ask(f"file_containing_symbol {symbol}", file_containing_symbol=symbol)
        files = {}
        for raw in res.file_descriptor_response.file_descriptor_proto:
            fd = descriptor_pb2.FileDescriptorProto.FromString(raw)
            files[fd.name] = fd
        pool = descriptor_pool.DescriptorPool()
        added = set()

        def add(name):
            if name in added:
                return
            if name not in files:
                more = self._ask(f"file_by_filename {name}", file_by_filename=name)
                for raw in more.file_descriptor_response.file_descriptor_proto:
                    fd = descriptor_pb2.FileDescriptorProto.FromString(raw)
                    files.setdefault(fd.name, fd)
            for dep in files[name].dependency:
                add(dep)
            pool.Add(files[name])
            added.add(name)

        for name in list(files):
            add(name)
        return pool


TYPE_NAMES = {
    getattr(descriptor.FieldDescriptor, n): n[len("TYPE_") :].lower()
    for n in dir(descriptor.FieldDescriptor)
    if n.startswith("TYPE_")
}


def field_text(f):
    """`name = number (type)`, with `repeated` or `optional` as the .proto file says it."""
    if f.message_type is not None:
        kind = f.message_type.full_name
    elif f.enum_type is not None:
        kind = f.enum_type.full_name
    else:
        kind = TYPE_NAMES.get(f.type, str(f.type))
    if f.label == descriptor.FieldDescriptor.LABEL_REPEATED:
        kind = f"repeated {kind}"
    elif f.containing_oneof is not None and f.containing_oneof.name == f"_{f.name}":
        kind = f"optional {kind}"
    return f"{f.name} = {f.number} ({kind})"


def message_lines(prefix, m):
    """A message's full name after `prefix`, then one indented line per field."""
    lines = [f"{prefix}{m.full_name}"]
    lines += [f"    {field_text(f)}" for f in m.fields]
    return lines


def streamed(yes):
    """The `stream ` marker of a streaming request or response."""
    return "stream " if yes else ""


def describe(reflector, symbol):
    """The lines that describe `symbol`, whatever kind of descriptor it names."""
    pool = reflector.pool_with(symbol)
    for find, kind in (
        (pool.FindMethodByName, "method"),
        (pool.FindServiceByName, "service"),
        (pool.FindMessageTypeByName, "message"),
        (pool.FindEnumTypeByName, "enum"),
    ):
        try:
            d = find(symbol)
        except KeyError:
            continue
        file = d.containing_service.file if kind == "method" else d.file
        lines = [f"{kind} {d.full_name} (file {file.name})"]
        if kind == "method":
            lines += message_lines(f"  input  {streamed(d.client_streaming)}", d.input_type)
            lines += message_lines(f"  output {streamed(d.server_streaming)}", d.output_type)
        elif kind == "service":
            lines += [f"  rpc {m.name}({m.input_type.full_name}) returns ({m.output_type.full_name})" for m in d.methods]
        elif kind == "message":
            lines += message_lines("  ", d)[1:]
        else:
            lines += [f"    {v.name} = {v.number}" for v in d.values]
        return lines
    raise ClientError(f"{symbol}: the server's files declare no method, service, message or enum of that name")


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("address", type=address_arg, help="host:port of any rlaif service")
    p.add_argument("--describe", action="append", default=[], metavar="SYMBOL", help="a method, service, message or enum")
    p.add_argument("--api", choices=["v1", "v1alpha"], default="v1", help="reflection API version (default v1)")
    p.add_argument("--connect-timeout", type=float, default=10.0, help="seconds to wait for the server")
    args = p.parse_args(argv)
    try:
        api = stubs.load_reflection(args.api)
        with connect(args.address, "", args.connect_timeout) as channel:
            reflector = Reflector(channel, api)
            print(f"services of {args.address} (reflection {args.api}):")
            for name in sorted(reflector.services()):
                print(f"  {name}")
            for symbol in args.describe:
                print("\n".join(describe(reflector, symbol)))
    except ClientError as err:
        print(f"reflect.py: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

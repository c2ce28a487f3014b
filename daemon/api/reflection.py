"""Server reflection, as `grpc.reflection.v1` (what grpcurl, grpcui, Postman and the gRPC
libraries ask for first) and as `grpc.reflection.v1alpha` (what older tools ask for).

grpcio-reflection serves only v1alpha. v1 is the same protocol under a stable package: the same
messages, field for field (v1alpha was renamed, not changed). So v1 is served by the same
servicer, its messages read and written with v1alpha's classes (the bytes on the wire are the
same), and v1's file descriptor, v1alpha's renamed, joins the descriptor pool, so that
reflection describes itself under both names.
"""

from collections.abc import Iterable

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2 as v1alpha

V1ALPHA_PACKAGE = "grpc.reflection.v1alpha"
V1_PACKAGE = "grpc.reflection.v1"
V1_FILE = "grpc/reflection/v1/reflection.proto"
V1_SERVICE = f"{V1_PACKAGE}.ServerReflection"
V1ALPHA_SERVICE = reflection.SERVICE_NAME


def enable(server: grpc.aio.Server, services: Iterable[str]) -> None:
    """Serve reflection of services (and of itself) on server, as v1 and v1alpha."""
    pool = descriptor_pool.Default()
    _add_v1_file(pool)
    # One servicer answers under both names, so that their answers are the same.
    servicer = _Servicer([*services, V1_SERVICE, V1ALPHA_SERVICE], pool=pool)
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    server.add_generic_rpc_handlers((_v1_handler(servicer),))


class _Servicer(reflection.aio.ReflectionServicer):
    """grpcio-reflection's, which finds a method too, as the protocol says (`<package>.<service>
    [.<method>]`): protobuf's pool finds services and types, not their members."""

    def _file_containing_symbol(self, request, fully_qualified_name):
        answer = super()._file_containing_symbol(request, fully_qualified_name)
        if answer.HasField("error_response") and self._is_member(fully_qualified_name):
            parent = fully_qualified_name.rpartition(".")[0]
            return super()._file_containing_symbol(request, parent)
        return answer

    def _is_member(self, name: str) -> bool:
        """Whether name is a method of a service or a field of a message the pool holds."""
        parent, _, member = name.rpartition(".")
        try:
            return member in self._pool.FindServiceByName(parent).methods_by_name
        except KeyError:
            pass
        try:
            return member in self._pool.FindMessageTypeByName(parent).fields_by_name
        except KeyError:
            return False


def _v1_handler(servicer) -> grpc.GenericRpcHandler:
    info = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=v1alpha.ServerReflectionRequest.FromString,
        response_serializer=v1alpha.ServerReflectionResponse.SerializeToString,
    )
    return grpc.method_handlers_generic_handler(V1_SERVICE, {"ServerReflectionInfo": info})


def _add_v1_file(pool: descriptor_pool.DescriptorPool) -> None:
    """v1's reflection.proto in pool: v1alpha's, renamed (once; a newer grpcio may have it)."""
    try:
        pool.FindFileByName(V1_FILE)
        return
    except KeyError:
        pass
    file = descriptor_pb2.FileDescriptorProto()
    v1alpha.DESCRIPTOR.CopyToProto(file)
    file.name = V1_FILE
    file.package = V1_PACKAGE
    file.options.Clear()
    file.options.java_package = "io.grpc.reflection.v1"
    file.options.java_multiple_files = True
    file.options.java_outer_classname = "ServerReflectionProto"
    file.options.go_package = "google.golang.org/grpc/reflection/grpc_reflection_v1"
    old, new = f".{V1ALPHA_PACKAGE}.", f".{V1_PACKAGE}."
    for message in file.message_type:
        for field in message.field:
            if field.HasField("type_name"):  # a message field (setting it on others is wrong)
                field.type_name = field.type_name.replace(old, new)
    for service in file.service:
        for method in service.method:
            method.input_type = method.input_type.replace(old, new)
            method.output_type = method.output_type.replace(old, new)
    pool.Add(file)

"""gRPC server reflection as generic tools use it: a client built from the standard
grpc.reflection.v1 protocol alone (compiled here from its .proto, nothing taken from bfd or
from grpcio-reflection) lists bfd's services and resolves a method to its file descriptor; the
v1alpha name answers the same."""

import importlib
import sys

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_tools import protoc

from bulkforge.proto.bulkforge.v1 import bulkforge_pb2 as pb

# The standard protocol, field for field (grpc-proto's grpc/reflection/v1/reflection.proto),
# under a package of this test's own: the descriptor pool of this process holds bfd's.
V1_PROTO = """
syntax = "proto3";
package PACKAGE;
service ServerReflection {
  rpc ServerReflectionInfo(stream ServerReflectionRequest)
      returns (stream ServerReflectionResponse);
}
message ServerReflectionRequest {
  string host = 1;
  oneof message_request {
    string file_by_filename = 3;
    string file_containing_symbol = 4;
    ExtensionRequest file_containing_extension = 5;
    string all_extension_numbers_of_type = 6;
    string list_services = 7;
  }
}
message ExtensionRequest { string containing_type = 1; int32 extension_number = 2; }
message ServerReflectionResponse {
  string valid_host = 1;
  ServerReflectionRequest original_request = 2;
  oneof message_response {
    FileDescriptorResponse file_descriptor_response = 4;
    ExtensionNumberResponse all_extension_numbers_response = 5;
    ListServiceResponse list_services_response = 6;
    ErrorResponse error_response = 7;
  }
}
message FileDescriptorResponse { repeated bytes file_descriptor_proto = 1; }
message ExtensionNumberResponse { string base_type_name = 1; repeated int32 extension_number = 2; }
message ListServiceResponse { repeated ServiceResponse service = 1; }
message ServiceResponse { string name = 1; }
message ErrorResponse { int32 error_code = 1; string error_message = 2; }
"""


@pytest.fixture(scope="module")
def v1(tmp_path_factory):
    """The v1 messages, compiled from V1_PROTO; calls go to /grpc.reflection.v1.… by path."""
    root = tmp_path_factory.mktemp("v1")
    (root / "reflection_v1_client.proto").write_text(
        V1_PROTO.replace("PACKAGE", "reflection_v1_client")
    )
    assert (
        protoc.main(
            ["protoc", f"-I{root}", f"--python_out={root}", f"{root}/reflection_v1_client.proto"]
        )
        == 0
    )
    sys.path.insert(0, str(root))
    try:
        return importlib.import_module("reflection_v1_client_pb2")
    finally:
        sys.path.remove(str(root))


def ask(daemon, v1, service: str, **request) -> list:
    """One request on one ServerReflectionInfo stream of service, its answers."""
    with grpc.insecure_channel(f"unix:{daemon.socket}") as channel:
        info = channel.stream_stream(
            f"/{service}/ServerReflectionInfo",
            request_serializer=v1.ServerReflectionRequest.SerializeToString,
            response_deserializer=v1.ServerReflectionResponse.FromString,
        )
        return list(info(iter([v1.ServerReflectionRequest(**request)]), timeout=10))


@pytest.mark.parametrize("service", ["grpc.reflection.v1.ServerReflection",
                                     "grpc.reflection.v1alpha.ServerReflection"])  # fmt: skip
def test_reflection_lists_and_resolves_under_v1_and_v1alpha(daemon, v1, service):
    (listed,) = ask(daemon, v1, service, list_services="")
    assert listed.WhichOneof("message_response") == "list_services_response"
    names = {s.name for s in listed.list_services_response.service}
    assert names == {
        "bulkforge.v1.Bulkforge",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    }

    # A method resolves to the file that declares it, with its imports: enough to call it.
    (found,) = ask(daemon, v1, service, file_containing_symbol="bulkforge.v1.Bulkforge.Submit")
    pool = pool_of(found)
    submit = pool.FindMethodByName("bulkforge.v1.Bulkforge.Submit")
    assert submit.input_type.full_name == pb.SubmitRequest.DESCRIPTOR.full_name
    assert [f.name for f in submit.input_type.fields] == [
        f.name for f in pb.SubmitRequest.DESCRIPTOR.fields
    ]
    (field,) = ask(daemon, v1, service, file_containing_symbol="bulkforge.v1.SubmitRequest.name")
    assert pool_of(field).FindMessageTypeByName("bulkforge.v1.SubmitRequest").fields_by_name["name"]
    # Reflection describes itself under both names.
    for each in ("grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"):
        (itself,) = ask(daemon, v1, service, file_containing_symbol=each)
        method = pool_of(itself).FindMethodByName(f"{each}.ServerReflectionInfo")
        assert method.client_streaming and method.server_streaming
        assert method.input_type.full_name == each.rsplit(".", 1)[0] + ".ServerReflectionRequest"
    # What it does not know it says so, as the protocol has it.
    for unknown in ("no.such.Service", "bulkforge.v1.Bulkforge.NoSuchMethod"):
        (answer,) = ask(daemon, v1, service, file_containing_symbol=unknown)
        assert answer.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0], unknown


def pool_of(answer) -> descriptor_pool.DescriptorPool:
    """A fresh pool of the files an answer carries (dependencies first, as protoc would)."""
    files = [descriptor_pb2.FileDescriptorProto.FromString(raw)
             for raw in answer.file_descriptor_response.file_descriptor_proto]  # fmt: skip
    assert files, answer
    pool, added = descriptor_pool.DescriptorPool(), set()
    while len(added) < len(files):
        ready = [f for f in files if f.name not in added and set(f.dependency) <= added]
        assert ready, f"files whose imports never came: {[f.name for f in files]}"
        for file in ready:
            pool.Add(file)
            added.add(file.name)
    return pool

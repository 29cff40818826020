"""The Open Inference Protocol v2 over gRPC, next to the REST API in every worker.

``inference.proto`` is the contract (package ``inference``, service
``GRPCInferenceService``: the names and field numbers every OIP v2 client is generated
from). Its Python modules (``inference_pb2``, ``inference_pb2_grpc``) are generated at build
time by setup.py and never committed. The rest:

* ``status`` (pure): the gRPC status code and trailing metadata of a REST status;
* ``codec`` (pure): protobuf messages to and from the runtime's own request and response
  types, with the REST API's validation and messages;
* ``server``: the grpc.aio server of one worker, its health service and its shutdown.

Importing this package imports nothing from grpc: only a worker process, after the fork,
imports ``server`` (gRPC's threads and file descriptors must never exist in the master).
"""

from pathlib import Path

PROTO = Path(__file__).with_name("inference.proto")
"""The .proto file, shipped in the package (for grpcurl ``-proto`` and other languages)."""

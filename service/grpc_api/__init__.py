"""The Open Inference Protocol (KServe V2) over gRPC: messages (``inference_pb2``, generated from
``inference.proto``), the method table (``messages``) and the server (``server``)."""

"""Who may call bfd over TCP: a bearer token on every RPC but the health checks.

The unix socket is guarded by its mode (0660: bfd's user and group). The TCP listener is
always TLS (a client certificate is demanded too when bfd has a client CA); with a token
file (read and checked at start by `listener.py`), this interceptor refuses every call over
it that does not carry the token: UNAUTHENTICATED without one, PERMISSION_DENIED with another.
"""

import hmac

import grpc

# Load balancers and service managers probe health without credentials.
OPEN_TO_ALL = ("/grpc.health.v1.Health/",)


class BearerToken(grpc.aio.ServerInterceptor):
    def __init__(self, token: str):
        self._expected = f"Bearer {token}".encode()

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None or details.method.startswith(OPEN_TO_ALL):
            return handler
        given = dict(details.invocation_metadata or ()).get("authorization")
        if given is None:
            message = "this bfd wants a bearer token over TCP: give bfctl --token-file F"
            return _refusal(handler, grpc.StatusCode.UNAUTHENTICATED, message)
        if not hmac.compare_digest(str(given).encode(), self._expected):
            message = "the bearer token is not this bfd's"
            return _refusal(handler, grpc.StatusCode.PERMISSION_DENIED, message)
        return handler


def _refusal(handler: grpc.RpcMethodHandler, code: grpc.StatusCode, message: str):
    """A handler of the same shape as handler that only refuses."""

    async def refuse(request, context):
        await context.abort(code, message)

    async def refuse_stream(request, context):
        await context.abort(code, message)
        yield  # never reached: makes this an async generator, as a streaming handler is

    codecs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(refuse, **codecs)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(refuse_stream, **codecs)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(refuse, **codecs)
    return grpc.stream_stream_rpc_method_handler(refuse_stream, **codecs)

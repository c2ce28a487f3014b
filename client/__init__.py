"""bfctl: a thin client over the bulkforge gRPC API."""

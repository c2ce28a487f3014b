"""Refusals: what the daemon says no to, with a message a person can act on.

Business code raises these; the API servicer is the one place that maps them to
gRPC status codes.
"""


class Refused(Exception):
    """Base of every refusal; str(exc) is shown to the operator as it is."""


class InvalidArgument(Refused):
    """The request, or the data it names (a manifest, a path), is malformed."""


class NotFound(Refused):
    """No such job."""


class AlreadyExists(Refused):
    """A job by that name exists with different parameters."""


class FailedPrecondition(Refused):
    """The job's state does not allow the verb."""


class ResourceExhausted(Refused):
    """The node cannot take the work now."""


class Unavailable(Refused):
    """The daemon is draining or stopping."""


class SourceUnavailable(Refused):
    """The remote source (a bucket, a hub) cannot be reached or fails now; try again later."""

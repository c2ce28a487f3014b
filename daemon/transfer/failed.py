"""Transfer failures as bfd raises them: a `Failure` with its step and error class."""

from bulkforge.daemon.failures import Failure
from bulkforge.daemon.transfer.protocol import Miss


class TransferFailed(Exception):
    def __init__(self, failure: Failure):
        super().__init__(failure.message)
        self.failure = failure


def fail(
    step: str, error_class: str, message: str, retryable: bool = True, after: float | None = None
) -> TransferFailed:
    """A failure to raise: retryable unless the origin said it never will be."""
    return TransferFailed(Failure(step, error_class, message, retryable, after))


def failed_by(miss: Miss) -> TransferFailed:
    return fail(*miss)

"""The gRPC servicer: each method validates its request, calls one Control verb, and
answers with the message `messages.py` builds. Refusals become status codes in `status.py`.
"""

import asyncio
import math
import time
from collections.abc import AsyncIterator
from pathlib import Path

from pydantic import BaseModel, ValidationError

from bulkforge.daemon import errors
from bulkforge.daemon.api import messages
from bulkforge.daemon.api.status import abort, log_refusal, refusals
from bulkforge.daemon.control import Control
from bulkforge.daemon.machines.job import TERMINAL, JobState
from bulkforge.daemon.progress import Rates
from bulkforge.daemon.store import StoreFatal
from bulkforge.daemon.validation import JobName
from bulkforge.proto.bulkforge.v1 import bulkforge_pb2 as pb
from bulkforge.proto.bulkforge.v1 import bulkforge_pb2_grpc as pb_grpc
from bulkforge.proto.units import MAX_FAILURES_LIMIT

WATCH_ENDS = TERMINAL | {JobState.AWAITING_SWAP}
# A watch reads the store at most ten times a second, and says "still the same" every 10 s.
MIN_WATCH_INTERVAL_S = 0.1
MAX_WATCH_INTERVAL_S = 3600.0
WATCH_HEARTBEAT_S = 10.0
DEFAULT_FAILURES_LIMIT = 100
# One answer must fit a gRPC message; the groups summarise the rest.


class NameOnly(BaseModel):
    name: JobName


def _name(request) -> str:
    return NameOnly(name=request.name).name


class Servicer(pb_grpc.BulkforgeServicer):
    """One for every listener of the daemon, so limits such as max_watches are global."""

    def __init__(self, control: Control, max_watches: int):
        self._control = control
        self._max_watches = max_watches
        self._watches = 0

    @refusals
    async def Submit(self, request: pb.SubmitRequest, context) -> pb.SubmitResponse:
        kind = request.WhichOneof("spec") or ""
        spec = getattr(request, kind) if kind else None
        view, created = await self._control.submit(request.name, kind, spec)
        return pb.SubmitResponse(job=messages.job_message(view), created=created)

    @refusals
    async def Export(self, request: pb.ExportRequest, context) -> pb.ExportResponse:
        started = time.perf_counter()
        exported = await self._control.export(_name(request), request.dest)
        return messages.export_message(exported, time.perf_counter() - started)

    @refusals
    async def List(self, request: pb.ListRequest, context) -> pb.ListResponse:
        views = await self._control.list(list(request.states), request.kind)
        return pb.ListResponse(jobs=[messages.job_message(view) for view in views])

    @refusals
    async def Status(self, request: pb.JobRef, context) -> pb.Job:
        return messages.job_message(await self._control.status(_name(request)))

    @refusals
    async def Pause(self, request: pb.JobRef, context) -> pb.Job:
        return messages.job_message(await self._control.pause(_name(request)))

    @refusals
    async def Resume(self, request: pb.JobRef, context) -> pb.Job:
        return messages.job_message(await self._control.resume(_name(request)))

    @refusals
    async def Cancel(self, request: pb.JobRef, context) -> pb.Job:
        return messages.job_message(await self._control.cancel(_name(request)))

    @refusals
    async def Remove(self, request: pb.RemoveRequest, context) -> pb.RemoveResponse:
        view, items, deleted = await self._control.remove(_name(request), request.delete_output)
        messages.forget(view.job.id)
        return messages.removed_message(view, items, deleted)

    @refusals
    async def Retry(self, request: pb.RetryRequest, context) -> pb.RetryResponse:
        view, retried = await self._control.retry(_name(request), request.step, request.error)
        return pb.RetryResponse(job=messages.job_message(view), retried=retried)

    @refusals
    async def Failures(self, request: pb.FailuresRequest, context) -> pb.FailuresResponse:
        if not 0 <= request.limit <= MAX_FAILURES_LIMIT:
            raise errors.InvalidArgument(f"limit must be between 0 and {MAX_FAILURES_LIMIT}")
        limit = request.limit or DEFAULT_FAILURES_LIMIT
        report = await self._control.failures(_name(request), request.step, limit)
        return messages.failures_message(report)

    @refusals
    async def Stats(self, request: pb.JobRef, context) -> pb.StatsResponse:
        return messages.stats_message(await self._control.stats(_name(request)))

    @refusals
    async def Analyze(self, request: pb.AnalyzeRequest, context) -> pb.AnalyzeResponse:
        summary, limit = await self._control.analyze(request)
        return messages.analysis_message(summary, limit)

    @refusals
    async def Plan(self, request: pb.PlanRequest, context) -> pb.PlanResponse:
        plan, space, seconds = await self._control.plan(request)
        return messages.plan_message(plan, space, seconds)

    @refusals
    async def Continue(self, request: pb.JobRef, context) -> pb.Job:
        return messages.job_message(await self._control.continue_job(_name(request)))

    @refusals
    async def Swap(self, request: pb.SwapRequest, context) -> pb.SwapResponse:
        dest = Path(request.dest) if request.dest else None
        view, swapped = await self._control.swap(_name(request), dest)
        return messages.swap_message(view, swapped)

    @refusals
    async def Verify(self, request: pb.VerifyRequest, context) -> pb.VerifyResponse:
        name = _name(request)
        batch = request.batch if request.HasField("batch") else None
        if batch is not None and batch < 0:
            raise errors.InvalidArgument("batch must not be negative")
        started = time.perf_counter()
        checked = await self._control.verify(name, batch)
        return messages.verification_message(checked, time.perf_counter() - started)

    @refusals
    async def System(self, request: pb.SystemRequest, context) -> pb.SystemResponse:
        if request.set:
            await self._control.set_limits(dict(request.set))
        return messages.system_message(await self._control.system(), version())

    async def Watch(self, request: pb.WatchRequest, context) -> AsyncIterator[pb.WatchEvent]:
        if self._watches >= self._max_watches:
            message = (
                f"{self._watches} watches are open, bfd's limit (max_watches): close one, "
                "or poll with `bfctl status`"
            )
            await abort(context, errors.ResourceExhausted(message))
        self._watches += 1
        try:
            async for event in self._events(request):
                yield event
        except (errors.Refused, ValidationError, StoreFatal) as exc:
            log_refusal("Watch", request, exc)
            await abort(context, exc)
        finally:
            self._watches -= 1

    async def _events(self, request: pb.WatchRequest) -> AsyncIterator[pb.WatchEvent]:
        """The job's present state, read when it is about to be sent: bfd never queues events.

        A reader that stops reading fills the stream's HTTP/2 window, and then the next send
        waits; so what a stream holds is bounded by that window, and once the reader drains
        it the first event sent is read fresh. Unchanged states are sent only as a heartbeat,
        so an idle or held job fills no window at all.
        """
        name = _name(request)
        if not 0 <= request.interval_s < math.inf:
            raise errors.InvalidArgument("interval_s must be a finite number of seconds, 0 or more")
        wanted = request.interval_s or 1.0
        interval = min(max(MIN_WATCH_INTERVAL_S, wanted), MAX_WATCH_INTERVAL_S)
        heartbeat = max(WATCH_HEARTBEAT_S, interval)
        rates = Rates()
        sent, sent_at = None, -math.inf
        while True:
            # One short read per event: no transaction stays open between messages.
            view = await self._control.status(name)
            pace = rates.add(view)
            job = messages.job_message(view)
            final = view.job.state in WATCH_ENDS
            if final or job != sent or time.monotonic() - sent_at >= heartbeat:
                yield messages.watch_event(job, pace, final, observed_at=view.read_at)
                sent, sent_at = job, time.monotonic()
            if final:
                return
            await asyncio.sleep(interval)


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as package_version

    try:
        return package_version("bulkforge")
    except PackageNotFoundError:
        return "0+unknown"

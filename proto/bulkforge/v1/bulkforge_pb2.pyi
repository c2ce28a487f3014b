from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JobRef(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class RemoveRequest(_message.Message):
    __slots__ = ("name", "delete_output")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DELETE_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    name: str
    delete_output: bool
    def __init__(self, name: _Optional[str] = ..., delete_output: _Optional[bool] = ...) -> None: ...

class DeletedOutput(_message.Message):
    __slots__ = ("files", "directories", "bytes", "paths", "not_deleted")
    FILES_FIELD_NUMBER: _ClassVar[int]
    DIRECTORIES_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    PATHS_FIELD_NUMBER: _ClassVar[int]
    NOT_DELETED_FIELD_NUMBER: _ClassVar[int]
    files: int
    directories: int
    bytes: int
    paths: _containers.RepeatedScalarFieldContainer[str]
    not_deleted: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, files: _Optional[int] = ..., directories: _Optional[int] = ..., bytes: _Optional[int] = ..., paths: _Optional[_Iterable[str]] = ..., not_deleted: _Optional[_Iterable[str]] = ...) -> None: ...

class RemoveResponse(_message.Message):
    __slots__ = ("name", "state", "dest", "items", "deleted", "item_unit")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    DEST_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    DELETED_FIELD_NUMBER: _ClassVar[int]
    ITEM_UNIT_FIELD_NUMBER: _ClassVar[int]
    name: str
    state: str
    dest: str
    items: int
    deleted: DeletedOutput
    item_unit: str
    def __init__(self, name: _Optional[str] = ..., state: _Optional[str] = ..., dest: _Optional[str] = ..., items: _Optional[int] = ..., deleted: _Optional[_Union[DeletedOutput, _Mapping]] = ..., item_unit: _Optional[str] = ...) -> None: ...

class UrlList(_message.Message):
    __slots__ = ("urls",)
    URLS_FIELD_NUMBER: _ClassVar[int]
    urls: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, urls: _Optional[_Iterable[str]] = ...) -> None: ...

class DownloadSpec(_message.Message):
    __slots__ = ("manifest", "urls", "s3", "hf", "dest", "include", "exclude", "space", "safety_margin", "oversize", "auto_proceed")
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    URLS_FIELD_NUMBER: _ClassVar[int]
    S3_FIELD_NUMBER: _ClassVar[int]
    HF_FIELD_NUMBER: _ClassVar[int]
    DEST_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_FIELD_NUMBER: _ClassVar[int]
    SPACE_FIELD_NUMBER: _ClassVar[int]
    SAFETY_MARGIN_FIELD_NUMBER: _ClassVar[int]
    OVERSIZE_FIELD_NUMBER: _ClassVar[int]
    AUTO_PROCEED_FIELD_NUMBER: _ClassVar[int]
    manifest: str
    urls: UrlList
    s3: str
    hf: str
    dest: str
    include: _containers.RepeatedScalarFieldContainer[str]
    exclude: _containers.RepeatedScalarFieldContainer[str]
    space: str
    safety_margin: float
    oversize: str
    auto_proceed: bool
    def __init__(self, manifest: _Optional[str] = ..., urls: _Optional[_Union[UrlList, _Mapping]] = ..., s3: _Optional[str] = ..., hf: _Optional[str] = ..., dest: _Optional[str] = ..., include: _Optional[_Iterable[str]] = ..., exclude: _Optional[_Iterable[str]] = ..., space: _Optional[str] = ..., safety_margin: _Optional[float] = ..., oversize: _Optional[str] = ..., auto_proceed: _Optional[bool] = ...) -> None: ...

class ScenesSpec(_message.Message):
    __slots__ = ("input", "key", "url", "keep", "dest", "shard_size", "format", "steps", "max_size", "timeout_s", "caption")
    INPUT_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    KEEP_FIELD_NUMBER: _ClassVar[int]
    DEST_FIELD_NUMBER: _ClassVar[int]
    SHARD_SIZE_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    MAX_SIZE_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    CAPTION_FIELD_NUMBER: _ClassVar[int]
    input: str
    key: str
    url: str
    keep: _containers.RepeatedScalarFieldContainer[str]
    dest: str
    shard_size: int
    format: str
    steps: _containers.RepeatedScalarFieldContainer[str]
    max_size: str
    timeout_s: float
    caption: str
    def __init__(self, input: _Optional[str] = ..., key: _Optional[str] = ..., url: _Optional[str] = ..., keep: _Optional[_Iterable[str]] = ..., dest: _Optional[str] = ..., shard_size: _Optional[int] = ..., format: _Optional[str] = ..., steps: _Optional[_Iterable[str]] = ..., max_size: _Optional[str] = ..., timeout_s: _Optional[float] = ..., caption: _Optional[str] = ...) -> None: ...

class CleanSpec(_message.Message):
    __slots__ = ("input", "after", "dest", "kinds", "markets")
    INPUT_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    DEST_FIELD_NUMBER: _ClassVar[int]
    KINDS_FIELD_NUMBER: _ClassVar[int]
    MARKETS_FIELD_NUMBER: _ClassVar[int]
    input: str
    after: str
    dest: str
    kinds: _containers.RepeatedScalarFieldContainer[str]
    markets: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, input: _Optional[str] = ..., after: _Optional[str] = ..., dest: _Optional[str] = ..., kinds: _Optional[_Iterable[str]] = ..., markets: _Optional[_Iterable[str]] = ...) -> None: ...

class GenerateSpec(_message.Message):
    __slots__ = ("spec_text", "spec_name", "rows", "seed", "format", "sql_dialect", "dest", "chunk_rows", "preset")
    SPEC_TEXT_FIELD_NUMBER: _ClassVar[int]
    SPEC_NAME_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    SQL_DIALECT_FIELD_NUMBER: _ClassVar[int]
    DEST_FIELD_NUMBER: _ClassVar[int]
    CHUNK_ROWS_FIELD_NUMBER: _ClassVar[int]
    PRESET_FIELD_NUMBER: _ClassVar[int]
    spec_text: str
    spec_name: str
    rows: int
    seed: int
    format: str
    sql_dialect: str
    dest: str
    chunk_rows: int
    preset: str
    def __init__(self, spec_text: _Optional[str] = ..., spec_name: _Optional[str] = ..., rows: _Optional[int] = ..., seed: _Optional[int] = ..., format: _Optional[str] = ..., sql_dialect: _Optional[str] = ..., dest: _Optional[str] = ..., chunk_rows: _Optional[int] = ..., preset: _Optional[str] = ...) -> None: ...

class SubmitRequest(_message.Message):
    __slots__ = ("name", "download", "scenes", "clean", "generate")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DOWNLOAD_FIELD_NUMBER: _ClassVar[int]
    SCENES_FIELD_NUMBER: _ClassVar[int]
    CLEAN_FIELD_NUMBER: _ClassVar[int]
    GENERATE_FIELD_NUMBER: _ClassVar[int]
    name: str
    download: DownloadSpec
    scenes: ScenesSpec
    clean: CleanSpec
    generate: GenerateSpec
    def __init__(self, name: _Optional[str] = ..., download: _Optional[_Union[DownloadSpec, _Mapping]] = ..., scenes: _Optional[_Union[ScenesSpec, _Mapping]] = ..., clean: _Optional[_Union[CleanSpec, _Mapping]] = ..., generate: _Optional[_Union[GenerateSpec, _Mapping]] = ...) -> None: ...

class SubmitResponse(_message.Message):
    __slots__ = ("job", "created")
    JOB_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    job: Job
    created: bool
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ..., created: _Optional[bool] = ...) -> None: ...

class Batch(_message.Message):
    __slots__ = ("index", "state", "bytes", "files", "disk", "disk_info", "failures", "started_at_ms", "finished_at_ms", "tone", "settled")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    DISK_FIELD_NUMBER: _ClassVar[int]
    DISK_INFO_FIELD_NUMBER: _ClassVar[int]
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    TONE_FIELD_NUMBER: _ClassVar[int]
    SETTLED_FIELD_NUMBER: _ClassVar[int]
    index: int
    state: str
    bytes: int
    files: int
    disk: str
    disk_info: DiskInfo
    failures: int
    started_at_ms: int
    finished_at_ms: int
    tone: str
    settled: bool
    def __init__(self, index: _Optional[int] = ..., state: _Optional[str] = ..., bytes: _Optional[int] = ..., files: _Optional[int] = ..., disk: _Optional[str] = ..., disk_info: _Optional[_Union[DiskInfo, _Mapping]] = ..., failures: _Optional[int] = ..., started_at_ms: _Optional[int] = ..., finished_at_ms: _Optional[int] = ..., tone: _Optional[str] = ..., settled: _Optional[bool] = ...) -> None: ...

class DiskInfo(_message.Message):
    __slots__ = ("mount", "device", "fsid", "fstype", "uuid", "label")
    MOUNT_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    FSID_FIELD_NUMBER: _ClassVar[int]
    FSTYPE_FIELD_NUMBER: _ClassVar[int]
    UUID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    mount: str
    device: str
    fsid: str
    fstype: str
    uuid: str
    label: str
    def __init__(self, mount: _Optional[str] = ..., device: _Optional[str] = ..., fsid: _Optional[str] = ..., fstype: _Optional[str] = ..., uuid: _Optional[str] = ..., label: _Optional[str] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("name", "kind", "state", "counts", "bytes_done", "bytes_total", "batches", "dest", "message", "items_total", "retrying", "created_at_ms", "updated_at_ms", "registration", "finished", "succeeded", "failed", "states", "batch_unit", "tone", "tables", "bytes_total_known", "item_unit", "ended")
    class CountsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    BYTES_DONE_FIELD_NUMBER: _ClassVar[int]
    BYTES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    BATCHES_FIELD_NUMBER: _ClassVar[int]
    DEST_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ITEMS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    RETRYING_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    REGISTRATION_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    SUCCEEDED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    STATES_FIELD_NUMBER: _ClassVar[int]
    BATCH_UNIT_FIELD_NUMBER: _ClassVar[int]
    TONE_FIELD_NUMBER: _ClassVar[int]
    TABLES_FIELD_NUMBER: _ClassVar[int]
    BYTES_TOTAL_KNOWN_FIELD_NUMBER: _ClassVar[int]
    ITEM_UNIT_FIELD_NUMBER: _ClassVar[int]
    ENDED_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: str
    state: str
    counts: _containers.ScalarMap[str, int]
    bytes_done: int
    bytes_total: int
    batches: _containers.RepeatedCompositeFieldContainer[Batch]
    dest: str
    message: str
    items_total: int
    retrying: int
    created_at_ms: int
    updated_at_ms: int
    registration: Registration
    finished: int
    succeeded: int
    failed: int
    states: _containers.RepeatedCompositeFieldContainer[StateCount]
    batch_unit: str
    tone: str
    tables: _containers.RepeatedCompositeFieldContainer[TableProgress]
    bytes_total_known: bool
    item_unit: str
    ended: bool
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[str] = ..., state: _Optional[str] = ..., counts: _Optional[_Mapping[str, int]] = ..., bytes_done: _Optional[int] = ..., bytes_total: _Optional[int] = ..., batches: _Optional[_Iterable[_Union[Batch, _Mapping]]] = ..., dest: _Optional[str] = ..., message: _Optional[str] = ..., items_total: _Optional[int] = ..., retrying: _Optional[int] = ..., created_at_ms: _Optional[int] = ..., updated_at_ms: _Optional[int] = ..., registration: _Optional[_Union[Registration, _Mapping]] = ..., finished: _Optional[int] = ..., succeeded: _Optional[int] = ..., failed: _Optional[int] = ..., states: _Optional[_Iterable[_Union[StateCount, _Mapping]]] = ..., batch_unit: _Optional[str] = ..., tone: _Optional[str] = ..., tables: _Optional[_Iterable[_Union[TableProgress, _Mapping]]] = ..., bytes_total_known: _Optional[bool] = ..., item_unit: _Optional[str] = ..., ended: _Optional[bool] = ...) -> None: ...

class TableProgress(_message.Message):
    __slots__ = ("name", "rows_done", "rows_total", "parts_done", "parts_total", "rows_per_s")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROWS_DONE_FIELD_NUMBER: _ClassVar[int]
    ROWS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    PARTS_DONE_FIELD_NUMBER: _ClassVar[int]
    PARTS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    ROWS_PER_S_FIELD_NUMBER: _ClassVar[int]
    name: str
    rows_done: int
    rows_total: int
    parts_done: int
    parts_total: int
    rows_per_s: float
    def __init__(self, name: _Optional[str] = ..., rows_done: _Optional[int] = ..., rows_total: _Optional[int] = ..., parts_done: _Optional[int] = ..., parts_total: _Optional[int] = ..., rows_per_s: _Optional[float] = ...) -> None: ...

class StateCount(_message.Message):
    __slots__ = ("state", "count", "tone")
    STATE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    TONE_FIELD_NUMBER: _ClassVar[int]
    state: str
    count: int
    tone: str
    def __init__(self, state: _Optional[str] = ..., count: _Optional[int] = ..., tone: _Optional[str] = ...) -> None: ...

class Registration(_message.Message):
    __slots__ = ("rows_read", "rows_total", "done", "rejected", "first_rejected")
    ROWS_READ_FIELD_NUMBER: _ClassVar[int]
    ROWS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    FIRST_REJECTED_FIELD_NUMBER: _ClassVar[int]
    rows_read: int
    rows_total: int
    done: bool
    rejected: int
    first_rejected: str
    def __init__(self, rows_read: _Optional[int] = ..., rows_total: _Optional[int] = ..., done: _Optional[bool] = ..., rejected: _Optional[int] = ..., first_rejected: _Optional[str] = ...) -> None: ...

class ListRequest(_message.Message):
    __slots__ = ("states", "kind")
    STATES_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    states: _containers.RepeatedScalarFieldContainer[str]
    kind: str
    def __init__(self, states: _Optional[_Iterable[str]] = ..., kind: _Optional[str] = ...) -> None: ...

class ListResponse(_message.Message):
    __slots__ = ("jobs",)
    JOBS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ...) -> None: ...

class RetryRequest(_message.Message):
    __slots__ = ("name", "step", "error")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    name: str
    step: str
    error: str
    def __init__(self, name: _Optional[str] = ..., step: _Optional[str] = ..., error: _Optional[str] = ...) -> None: ...

class RetryResponse(_message.Message):
    __slots__ = ("job", "retried")
    JOB_FIELD_NUMBER: _ClassVar[int]
    RETRIED_FIELD_NUMBER: _ClassVar[int]
    job: Job
    retried: int
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ..., retried: _Optional[int] = ...) -> None: ...

class FailuresRequest(_message.Message):
    __slots__ = ("name", "step", "limit")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    name: str
    step: str
    limit: int
    def __init__(self, name: _Optional[str] = ..., step: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class FailureGroup(_message.Message):
    __slots__ = ("step", "error_class", "count", "sample")
    STEP_FIELD_NUMBER: _ClassVar[int]
    ERROR_CLASS_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_FIELD_NUMBER: _ClassVar[int]
    step: str
    error_class: str
    count: int
    sample: str
    def __init__(self, step: _Optional[str] = ..., error_class: _Optional[str] = ..., count: _Optional[int] = ..., sample: _Optional[str] = ...) -> None: ...

class Failure(_message.Message):
    __slots__ = ("item", "url", "step", "error_class", "error", "attempts", "retrying")
    ITEM_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    ERROR_CLASS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    RETRYING_FIELD_NUMBER: _ClassVar[int]
    item: str
    url: str
    step: str
    error_class: str
    error: str
    attempts: int
    retrying: bool
    def __init__(self, item: _Optional[str] = ..., url: _Optional[str] = ..., step: _Optional[str] = ..., error_class: _Optional[str] = ..., error: _Optional[str] = ..., attempts: _Optional[int] = ..., retrying: _Optional[bool] = ...) -> None: ...

class FailuresResponse(_message.Message):
    __slots__ = ("groups", "failures", "total", "item_unit")
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    ITEM_UNIT_FIELD_NUMBER: _ClassVar[int]
    groups: _containers.RepeatedCompositeFieldContainer[FailureGroup]
    failures: _containers.RepeatedCompositeFieldContainer[Failure]
    total: int
    item_unit: str
    def __init__(self, groups: _Optional[_Iterable[_Union[FailureGroup, _Mapping]]] = ..., failures: _Optional[_Iterable[_Union[Failure, _Mapping]]] = ..., total: _Optional[int] = ..., item_unit: _Optional[str] = ...) -> None: ...

class ThroughputBucket(_message.Message):
    __slots__ = ("start_ms", "items", "bytes", "items_per_s")
    START_MS_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    ITEMS_PER_S_FIELD_NUMBER: _ClassVar[int]
    start_ms: int
    items: int
    bytes: int
    items_per_s: float
    def __init__(self, start_ms: _Optional[int] = ..., items: _Optional[int] = ..., bytes: _Optional[int] = ..., items_per_s: _Optional[float] = ...) -> None: ...

class StatsResponse(_message.Message):
    __slots__ = ("job", "throughput", "failures", "elapsed_s", "items_per_s", "bytes_per_s", "bucket_s", "unit")
    JOB_FIELD_NUMBER: _ClassVar[int]
    THROUGHPUT_FIELD_NUMBER: _ClassVar[int]
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_S_FIELD_NUMBER: _ClassVar[int]
    ITEMS_PER_S_FIELD_NUMBER: _ClassVar[int]
    BYTES_PER_S_FIELD_NUMBER: _ClassVar[int]
    BUCKET_S_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    job: Job
    throughput: _containers.RepeatedCompositeFieldContainer[ThroughputBucket]
    failures: _containers.RepeatedCompositeFieldContainer[FailureGroup]
    elapsed_s: float
    items_per_s: float
    bytes_per_s: float
    bucket_s: int
    unit: str
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ..., throughput: _Optional[_Iterable[_Union[ThroughputBucket, _Mapping]]] = ..., failures: _Optional[_Iterable[_Union[FailureGroup, _Mapping]]] = ..., elapsed_s: _Optional[float] = ..., items_per_s: _Optional[float] = ..., bytes_per_s: _Optional[float] = ..., bucket_s: _Optional[int] = ..., unit: _Optional[str] = ...) -> None: ...

class SystemRequest(_message.Message):
    __slots__ = ("set",)
    class SetEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SET_FIELD_NUMBER: _ClassVar[int]
    set: _containers.ScalarMap[str, str]
    def __init__(self, set: _Optional[_Mapping[str, str]] = ...) -> None: ...

class Disk(_message.Message):
    __slots__ = ("path", "total_bytes", "free_bytes")
    PATH_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    FREE_BYTES_FIELD_NUMBER: _ClassVar[int]
    path: str
    total_bytes: int
    free_bytes: int
    def __init__(self, path: _Optional[str] = ..., total_bytes: _Optional[int] = ..., free_bytes: _Optional[int] = ...) -> None: ...

class SystemResponse(_message.Message):
    __slots__ = ("version", "pid", "uptime_s", "state_dir", "socket", "rss_bytes", "memory_cap", "cpu_workers", "disk_threshold", "bandwidth", "active_transfers", "max_connections", "db_bytes", "wal_bytes", "durability", "disks", "commits", "commit_p99_ms", "holds", "per_host_connections", "transfer_workers", "transfer_worker_pids", "metrics_address", "listen_address", "allow_unauthenticated")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    UPTIME_S_FIELD_NUMBER: _ClassVar[int]
    STATE_DIR_FIELD_NUMBER: _ClassVar[int]
    SOCKET_FIELD_NUMBER: _ClassVar[int]
    RSS_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_CAP_FIELD_NUMBER: _ClassVar[int]
    CPU_WORKERS_FIELD_NUMBER: _ClassVar[int]
    DISK_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    BANDWIDTH_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_TRANSFERS_FIELD_NUMBER: _ClassVar[int]
    MAX_CONNECTIONS_FIELD_NUMBER: _ClassVar[int]
    DB_BYTES_FIELD_NUMBER: _ClassVar[int]
    WAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    DURABILITY_FIELD_NUMBER: _ClassVar[int]
    DISKS_FIELD_NUMBER: _ClassVar[int]
    COMMITS_FIELD_NUMBER: _ClassVar[int]
    COMMIT_P99_MS_FIELD_NUMBER: _ClassVar[int]
    HOLDS_FIELD_NUMBER: _ClassVar[int]
    PER_HOST_CONNECTIONS_FIELD_NUMBER: _ClassVar[int]
    TRANSFER_WORKERS_FIELD_NUMBER: _ClassVar[int]
    TRANSFER_WORKER_PIDS_FIELD_NUMBER: _ClassVar[int]
    METRICS_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    LISTEN_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    ALLOW_UNAUTHENTICATED_FIELD_NUMBER: _ClassVar[int]
    version: str
    pid: int
    uptime_s: float
    state_dir: str
    socket: str
    rss_bytes: int
    memory_cap: int
    cpu_workers: int
    disk_threshold: float
    bandwidth: int
    active_transfers: int
    max_connections: int
    db_bytes: int
    wal_bytes: int
    durability: str
    disks: _containers.RepeatedCompositeFieldContainer[Disk]
    commits: int
    commit_p99_ms: float
    holds: _containers.RepeatedCompositeFieldContainer[Hold]
    per_host_connections: int
    transfer_workers: int
    transfer_worker_pids: _containers.RepeatedScalarFieldContainer[int]
    metrics_address: str
    listen_address: str
    allow_unauthenticated: bool
    def __init__(self, version: _Optional[str] = ..., pid: _Optional[int] = ..., uptime_s: _Optional[float] = ..., state_dir: _Optional[str] = ..., socket: _Optional[str] = ..., rss_bytes: _Optional[int] = ..., memory_cap: _Optional[int] = ..., cpu_workers: _Optional[int] = ..., disk_threshold: _Optional[float] = ..., bandwidth: _Optional[int] = ..., active_transfers: _Optional[int] = ..., max_connections: _Optional[int] = ..., db_bytes: _Optional[int] = ..., wal_bytes: _Optional[int] = ..., durability: _Optional[str] = ..., disks: _Optional[_Iterable[_Union[Disk, _Mapping]]] = ..., commits: _Optional[int] = ..., commit_p99_ms: _Optional[float] = ..., holds: _Optional[_Iterable[_Union[Hold, _Mapping]]] = ..., per_host_connections: _Optional[int] = ..., transfer_workers: _Optional[int] = ..., transfer_worker_pids: _Optional[_Iterable[int]] = ..., metrics_address: _Optional[str] = ..., listen_address: _Optional[str] = ..., allow_unauthenticated: _Optional[bool] = ...) -> None: ...

class Hold(_message.Message):
    __slots__ = ("job", "reason")
    JOB_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    job: str
    reason: str
    def __init__(self, job: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("name", "interval_s")
    NAME_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_S_FIELD_NUMBER: _ClassVar[int]
    name: str
    interval_s: float
    def __init__(self, name: _Optional[str] = ..., interval_s: _Optional[float] = ...) -> None: ...

class WatchEvent(_message.Message):
    __slots__ = ("job", "bytes_per_s", "items_per_s", "eta_s", "final", "observed_at", "restarted")
    JOB_FIELD_NUMBER: _ClassVar[int]
    BYTES_PER_S_FIELD_NUMBER: _ClassVar[int]
    ITEMS_PER_S_FIELD_NUMBER: _ClassVar[int]
    ETA_S_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    OBSERVED_AT_FIELD_NUMBER: _ClassVar[int]
    RESTARTED_FIELD_NUMBER: _ClassVar[int]
    job: Job
    bytes_per_s: float
    items_per_s: float
    eta_s: float
    final: bool
    observed_at: float
    restarted: bool
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ..., bytes_per_s: _Optional[float] = ..., items_per_s: _Optional[float] = ..., eta_s: _Optional[float] = ..., final: _Optional[bool] = ..., observed_at: _Optional[float] = ..., restarted: _Optional[bool] = ...) -> None: ...

class AnalyzeRequest(_message.Message):
    __slots__ = ("source", "largest", "space", "safety_margin")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    LARGEST_FIELD_NUMBER: _ClassVar[int]
    SPACE_FIELD_NUMBER: _ClassVar[int]
    SAFETY_MARGIN_FIELD_NUMBER: _ClassVar[int]
    source: DownloadSpec
    largest: int
    space: str
    safety_margin: float
    def __init__(self, source: _Optional[_Union[DownloadSpec, _Mapping]] = ..., largest: _Optional[int] = ..., space: _Optional[str] = ..., safety_margin: _Optional[float] = ...) -> None: ...

class SizeGroup(_message.Message):
    __slots__ = ("key", "files", "bytes")
    KEY_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    key: str
    files: int
    bytes: int
    def __init__(self, key: _Optional[str] = ..., files: _Optional[int] = ..., bytes: _Optional[int] = ...) -> None: ...

class AnalyzeResponse(_message.Message):
    __slots__ = ("files", "bytes", "unknown_size", "by_extension", "by_top_dir", "largest", "with_checksum", "batch_limit", "oversize_files", "oversize_bytes", "oversize")
    FILES_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_SIZE_FIELD_NUMBER: _ClassVar[int]
    BY_EXTENSION_FIELD_NUMBER: _ClassVar[int]
    BY_TOP_DIR_FIELD_NUMBER: _ClassVar[int]
    LARGEST_FIELD_NUMBER: _ClassVar[int]
    WITH_CHECKSUM_FIELD_NUMBER: _ClassVar[int]
    BATCH_LIMIT_FIELD_NUMBER: _ClassVar[int]
    OVERSIZE_FILES_FIELD_NUMBER: _ClassVar[int]
    OVERSIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    OVERSIZE_FIELD_NUMBER: _ClassVar[int]
    files: int
    bytes: int
    unknown_size: int
    by_extension: _containers.RepeatedCompositeFieldContainer[SizeGroup]
    by_top_dir: _containers.RepeatedCompositeFieldContainer[SizeGroup]
    largest: _containers.RepeatedCompositeFieldContainer[SizeGroup]
    with_checksum: int
    batch_limit: int
    oversize_files: int
    oversize_bytes: int
    oversize: _containers.RepeatedCompositeFieldContainer[SizeGroup]
    def __init__(self, files: _Optional[int] = ..., bytes: _Optional[int] = ..., unknown_size: _Optional[int] = ..., by_extension: _Optional[_Iterable[_Union[SizeGroup, _Mapping]]] = ..., by_top_dir: _Optional[_Iterable[_Union[SizeGroup, _Mapping]]] = ..., largest: _Optional[_Iterable[_Union[SizeGroup, _Mapping]]] = ..., with_checksum: _Optional[int] = ..., batch_limit: _Optional[int] = ..., oversize_files: _Optional[int] = ..., oversize_bytes: _Optional[int] = ..., oversize: _Optional[_Iterable[_Union[SizeGroup, _Mapping]]] = ...) -> None: ...

class PlanRequest(_message.Message):
    __slots__ = ("source", "space", "safety_margin", "oversize")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    SPACE_FIELD_NUMBER: _ClassVar[int]
    SAFETY_MARGIN_FIELD_NUMBER: _ClassVar[int]
    OVERSIZE_FIELD_NUMBER: _ClassVar[int]
    source: DownloadSpec
    space: str
    safety_margin: float
    oversize: str
    def __init__(self, source: _Optional[_Union[DownloadSpec, _Mapping]] = ..., space: _Optional[str] = ..., safety_margin: _Optional[float] = ..., oversize: _Optional[str] = ...) -> None: ...

class PlannedBatch(_message.Message):
    __slots__ = ("index", "files", "bytes", "cumulative_files", "cumulative_bytes", "directories", "split_directories", "oversize")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    CUMULATIVE_FILES_FIELD_NUMBER: _ClassVar[int]
    CUMULATIVE_BYTES_FIELD_NUMBER: _ClassVar[int]
    DIRECTORIES_FIELD_NUMBER: _ClassVar[int]
    SPLIT_DIRECTORIES_FIELD_NUMBER: _ClassVar[int]
    OVERSIZE_FIELD_NUMBER: _ClassVar[int]
    index: int
    files: int
    bytes: int
    cumulative_files: int
    cumulative_bytes: int
    directories: int
    split_directories: int
    oversize: bool
    def __init__(self, index: _Optional[int] = ..., files: _Optional[int] = ..., bytes: _Optional[int] = ..., cumulative_files: _Optional[int] = ..., cumulative_bytes: _Optional[int] = ..., directories: _Optional[int] = ..., split_directories: _Optional[int] = ..., oversize: _Optional[bool] = ...) -> None: ...

class PlanResponse(_message.Message):
    __slots__ = ("space", "safety_margin", "batch_limit", "space_from", "files", "bytes", "batches", "peak_bytes", "oversize_files", "oversize_bytes", "oversize", "oversize_policy", "seconds")
    SPACE_FIELD_NUMBER: _ClassVar[int]
    SAFETY_MARGIN_FIELD_NUMBER: _ClassVar[int]
    BATCH_LIMIT_FIELD_NUMBER: _ClassVar[int]
    SPACE_FROM_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    BATCHES_FIELD_NUMBER: _ClassVar[int]
    PEAK_BYTES_FIELD_NUMBER: _ClassVar[int]
    OVERSIZE_FILES_FIELD_NUMBER: _ClassVar[int]
    OVERSIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    OVERSIZE_FIELD_NUMBER: _ClassVar[int]
    OVERSIZE_POLICY_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    space: int
    safety_margin: float
    batch_limit: int
    space_from: str
    files: int
    bytes: int
    batches: _containers.RepeatedCompositeFieldContainer[PlannedBatch]
    peak_bytes: int
    oversize_files: int
    oversize_bytes: int
    oversize: _containers.RepeatedCompositeFieldContainer[SizeGroup]
    oversize_policy: str
    seconds: float
    def __init__(self, space: _Optional[int] = ..., safety_margin: _Optional[float] = ..., batch_limit: _Optional[int] = ..., space_from: _Optional[str] = ..., files: _Optional[int] = ..., bytes: _Optional[int] = ..., batches: _Optional[_Iterable[_Union[PlannedBatch, _Mapping]]] = ..., peak_bytes: _Optional[int] = ..., oversize_files: _Optional[int] = ..., oversize_bytes: _Optional[int] = ..., oversize: _Optional[_Iterable[_Union[SizeGroup, _Mapping]]] = ..., oversize_policy: _Optional[str] = ..., seconds: _Optional[float] = ...) -> None: ...

class SwapRequest(_message.Message):
    __slots__ = ("name", "dest")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DEST_FIELD_NUMBER: _ClassVar[int]
    name: str
    dest: str
    def __init__(self, name: _Optional[str] = ..., dest: _Optional[str] = ...) -> None: ...

class SwapResponse(_message.Message):
    __slots__ = ("job", "archived", "disk", "new_disk", "note")
    JOB_FIELD_NUMBER: _ClassVar[int]
    ARCHIVED_FIELD_NUMBER: _ClassVar[int]
    DISK_FIELD_NUMBER: _ClassVar[int]
    NEW_DISK_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    job: Job
    archived: _containers.RepeatedScalarFieldContainer[int]
    disk: DiskInfo
    new_disk: bool
    note: str
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ..., archived: _Optional[_Iterable[int]] = ..., disk: _Optional[_Union[DiskInfo, _Mapping]] = ..., new_disk: _Optional[bool] = ..., note: _Optional[str] = ...) -> None: ...

class VerifyRequest(_message.Message):
    __slots__ = ("name", "batch")
    NAME_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    name: str
    batch: int
    def __init__(self, name: _Optional[str] = ..., batch: _Optional[int] = ...) -> None: ...

class FileProblem(_message.Message):
    __slots__ = ("path", "problem")
    PATH_FIELD_NUMBER: _ClassVar[int]
    PROBLEM_FIELD_NUMBER: _ClassVar[int]
    path: str
    problem: str
    def __init__(self, path: _Optional[str] = ..., problem: _Optional[str] = ...) -> None: ...

class BatchCheck(_message.Message):
    __slots__ = ("index", "went_to", "on_this_disk", "checked", "missing_count", "missing", "changed_count", "changed")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    WENT_TO_FIELD_NUMBER: _ClassVar[int]
    ON_THIS_DISK_FIELD_NUMBER: _ClassVar[int]
    CHECKED_FIELD_NUMBER: _ClassVar[int]
    MISSING_COUNT_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELD_NUMBER: _ClassVar[int]
    CHANGED_COUNT_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    index: int
    went_to: str
    on_this_disk: bool
    checked: int
    missing_count: int
    missing: _containers.RepeatedScalarFieldContainer[str]
    changed_count: int
    changed: _containers.RepeatedCompositeFieldContainer[FileProblem]
    def __init__(self, index: _Optional[int] = ..., went_to: _Optional[str] = ..., on_this_disk: _Optional[bool] = ..., checked: _Optional[int] = ..., missing_count: _Optional[int] = ..., missing: _Optional[_Iterable[str]] = ..., changed_count: _Optional[int] = ..., changed: _Optional[_Iterable[_Union[FileProblem, _Mapping]]] = ...) -> None: ...

class VerifyResponse(_message.Message):
    __slots__ = ("dest", "mounted", "batches", "extra_count", "extra", "ok", "seconds")
    DEST_FIELD_NUMBER: _ClassVar[int]
    MOUNTED_FIELD_NUMBER: _ClassVar[int]
    BATCHES_FIELD_NUMBER: _ClassVar[int]
    EXTRA_COUNT_FIELD_NUMBER: _ClassVar[int]
    EXTRA_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    dest: str
    mounted: DiskInfo
    batches: _containers.RepeatedCompositeFieldContainer[BatchCheck]
    extra_count: int
    extra: _containers.RepeatedScalarFieldContainer[str]
    ok: bool
    seconds: float
    def __init__(self, dest: _Optional[str] = ..., mounted: _Optional[_Union[DiskInfo, _Mapping]] = ..., batches: _Optional[_Iterable[_Union[BatchCheck, _Mapping]]] = ..., extra_count: _Optional[int] = ..., extra: _Optional[_Iterable[str]] = ..., ok: _Optional[bool] = ..., seconds: _Optional[float] = ...) -> None: ...

class ExportRequest(_message.Message):
    __slots__ = ("name", "dest")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DEST_FIELD_NUMBER: _ClassVar[int]
    name: str
    dest: str
    def __init__(self, name: _Optional[str] = ..., dest: _Optional[str] = ...) -> None: ...

class ExportResponse(_message.Message):
    __slots__ = ("paths", "total", "successful", "failed", "seconds", "item_unit")
    PATHS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    SUCCESSFUL_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    ITEM_UNIT_FIELD_NUMBER: _ClassVar[int]
    paths: _containers.RepeatedScalarFieldContainer[str]
    total: int
    successful: int
    failed: int
    seconds: float
    item_unit: str
    def __init__(self, paths: _Optional[_Iterable[str]] = ..., total: _Optional[int] = ..., successful: _Optional[int] = ..., failed: _Optional[int] = ..., seconds: _Optional[float] = ..., item_unit: _Optional[str] = ...) -> None: ...

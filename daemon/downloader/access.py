"""How a job's requests are authorised: presigned S3 URLs, a Hugging Face token.

Built once per job from its spec (in a worker thread: boto3 is slow to import)
and applied to every request of its transfers.
"""

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Access:
    headers: Mapping[str, str] = field(default_factory=dict)
    presign: Callable[[str], str] | None = None

    def url(self, url: str) -> str:
        return self.presign(url) if self.presign else url


PUBLIC = Access()


def access_for(spec_json: str) -> Access:
    source = json.loads(spec_json).get("source", {})
    if "s3" in source:
        from bulkforge.daemon.downloader.sources.s3 import parse_s3_url, presigner

        return Access(presign=presigner(parse_s3_url(source["s3"])))
    if "hf" in source:
        from bulkforge.daemon.downloader.sources.hf import HFRepo, parse_hf_ref

        return Access(headers=HFRepo(parse_hf_ref(source["hf"])).auth_headers())
    return PUBLIC

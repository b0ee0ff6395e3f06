"""The metadata stage: file, EXIF, GPS, XMP, IPTC and colours from the raw bytes (`pipelines.metadata`)."""

import time
from typing import Any

from pipelines.limits import DecodeLimits
from pipelines.metadata import extract_metadata
from pipelines.metadata.extract import open_header
from serving.access_log import record_stages
from serving.metrics import STAGE_LATENCY


class MetadataStage:
    def __init__(self, limits: DecodeLimits, colors: bool = True):
        self.limits = limits
        self.colors = colors

    def extract(self, data: bytes) -> dict[str, Any]:
        """Metadata as a JSON-ready dict (field names and units: docs/METADATA.md)."""
        start = time.perf_counter()
        # A file that is not a readable image at all is a request error (4xx), like in the other stages;
        # anything less (a broken EXIF block, a huge image) is reported per section inside the result.
        open_header(data, self.limits).close()
        result = extract_metadata(data, self.limits, colors=self.colors).to_dict()
        elapsed = time.perf_counter() - start
        STAGE_LATENCY.labels("metadata", "").observe(elapsed)
        record_stages({"metadata": elapsed * 1000.0})  # the request's access-log line (in its own replica only)
        return result

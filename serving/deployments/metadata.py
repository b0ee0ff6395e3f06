"""The metadata stage: file, EXIF, GPS, XMP, IPTC and colours from the raw bytes, on its own CPU replicas."""

import asyncio
import dataclasses
import sys
import time
from typing import Any

from ray import serve

from pipelines.decode import open_validated
from pipelines.metadata import extract_metadata
from serving.config.settings import ServerSettings
from serving.metrics import STAGE_LATENCY


class MetadataExtractor:
    def __init__(self, colors: bool = True):
        self.limits = ServerSettings.from_env().decode_limits()
        self.colors = colors

    def _extract(self, data: bytes) -> dict[str, Any]:
        start = time.perf_counter()
        # A file that is not a readable image at all is a request error (4xx), like in the other stages;
        # anything less (a broken EXIF block, a huge image) is reported per section inside the result.
        open_validated(data, dataclasses.replace(self.limits, max_pixels=sys.maxsize)).close()
        result = extract_metadata(data, self.limits, colors=self.colors).to_dict()
        STAGE_LATENCY.labels("metadata", "").observe(time.perf_counter() - start)
        return result

    async def extract(self, data: bytes) -> dict[str, Any]:
        """Metadata as a JSON-ready dict (field names and units: docs/METADATA.md)."""
        return await asyncio.to_thread(self._extract, data)


# The class stays importable under its own name so Ray pickles it by reference, not by value.
MetadataDeployment = serve.deployment(name="Metadata", max_ongoing_requests=8)(MetadataExtractor)

"""What one `imgserve collection analyze` run did: images analysed and failed, and the outputs it wrote."""

from collections.abc import Sequence
from dataclasses import dataclass

from serving.collections.store import RecordedImage


@dataclass
class RunStats:
    listed: int
    skipped: int  # already in the collection (resumed)
    done: int = 0
    failed: int = 0
    seconds: float = 0.0
    outputs: int = 0  # --convert / --enhance outputs written this run
    outputs_failed: int = 0
    input_bytes: int = 0  # of the images whose output was written
    output_bytes: int = 0

    @property
    def ratio(self) -> float | None:
        """Input bytes per output byte over the outputs written (as a job's `compression_ratio`)."""
        return self.input_bytes / self.output_bytes if self.output_bytes else None

    def count(self, images: Sequence[RecordedImage]) -> None:
        for image in images:
            self.done += image.record.ok
            self.failed += not image.record.ok
            output = (image.document or {}).get("output")
            if output and "error" in output:
                self.outputs_failed += 1
            elif output:
                self.outputs += 1
                self.input_bytes += int(output["input_bytes"])
                self.output_bytes += int(output["output_bytes"])

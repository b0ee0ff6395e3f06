"""The filters of a collection's images by their public names, as every interface offers them: the query parameters
of `GET /v1/collections/{id}/images` and `.../export`, and `imgserve collection export`'s options (with dashes:
--camera-make). Plain data, without the checks (`serving.collections.filters.ImageFilter`): the CLI builds its
parser from it without importing the database and quality code."""

from dataclasses import dataclass


@dataclass(frozen=True)
class FilterParameter:
    name: str  # the query parameter; the CLI option is --name with dashes
    field: str  # the ImageFilter field it sets
    kind: type[str] | type[float] | type[bool]
    help: str


FILTER_PARAMETERS = (
    FilterParameter("tag", "tag", str, "Quality tag, e.g. blurry."),
    FilterParameter("level", "level", str, "Quality level: LOW, MEDIUM, HIGH, ULTRA."),
    FilterParameter("camera_make", "camera_make", str, "Camera make as recorded, e.g. Canon."),
    FilterParameter("camera_model", "camera_model", str, "Camera model as recorded, e.g. NIKON D750."),
    FilterParameter("min_score", "min_score", float, "Lowest quality score, 0 to 100 (inclusive)."),
    FilterParameter("max_score", "max_score", float, "Highest quality score, 0 to 100 (inclusive)."),
    FilterParameter("taken_after", "taken_after", str, "ISO date/time, e.g. 2024-05-01 (inclusive)."),
    FilterParameter("taken_before", "taken_before", str, "ISO date/time (exclusive)."),
    # not `format`: that names the export's csv/jsonl
    FilterParameter("file_format", "format", str, "File format, e.g. JPEG (jpeg/jpg also finds MPO camera JPEGs)."),
    FilterParameter("label", "label", str, "Top class label."),
    FilterParameter(
        "failed",
        "failed",
        bool,
        "Only the images that could not be analysed (true, --failed) or the others (false, --no-failed).",
    ),
)

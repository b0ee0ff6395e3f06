"""A finished batch job saved as a collection: each result's analysis document becomes one image record.

The job's results already are `/v1/analyze` documents, so nothing is analysed again. Items with the same name get
`#<index>` appended (a collection's names are unique); failed items are kept as failed records. Batch results carry
top-k only, not the classifier's wider output, so such a collection has no feature-space outliers.
"""

from collections.abc import Iterator

from pipelines.collections.record import failed_record, record_from_document
from serving.collections.store import CollectionInfo, CollectionStore, RecordedImage
from serving.errors import BadRequestError
from serving.jobs.errors import JobStateError
from serving.jobs.records import FINAL_JOB_STATES, ResultRecord, saved_name
from serving.jobs.store import JobStore
from serving.jobs.tables import job_location

PAGE = 500


def save_job_as_collection(
    jobs: JobStore, store: CollectionStore, job_id: str, name: str, tenant: str
) -> CollectionInfo:
    job = jobs.get_job(job_id, tenant)
    if job.status not in FINAL_JOB_STATES:
        raise JobStateError(f"job {job_id} is {job.status}; save it as a collection when it has finished")
    source = job_location(job_id)
    if source not in store.recorded_sources(name, tenant):  # saving the job again records nothing new: that is fine
        taken = store.recorded_names(name, tenant, _item_names(jobs, job_id))
        if taken:  # names are unique in a collection: this job's results would be taken as recorded and dropped
            raise BadRequestError(
                f"collection {name!r} already has {len(taken)} image(s) of this job's names from elsewhere, e.g. "
                f"{taken[0]!r}; save the job as another collection"
            )
    info = store.open(name, list(job.stages), [source], tenant, job_id)
    for page in _named_pages(jobs, job_id):
        images = []
        for item_name, result in page:
            if result.status == "done" and result.result is not None:
                record = record_from_document(item_name, result.result)
            else:
                record = failed_record(item_name, f"{result.error_kind}: {result.error}")
            # where it was read: this job's inputs (a purge of the job finds and erases it by that)
            images.append(RecordedImage(record, result.result, job_location(job_id)))
        store.add(info.id, images)
    store.finish(info.id)
    return store.get(info.id)


def _named_pages(jobs: JobStore, job_id: str) -> Iterator[list[tuple[str, ResultRecord]]]:
    """The job's results a page at a time, each with its name in the collection (unique: a repeated item name gets
    `#<index>`)."""
    seen: set[str] = set()
    after = -1
    while True:
        page = jobs.results_page(job_id, after, PAGE)
        named = []
        for result in page:
            named.append((saved_name(result.name, result.idx, seen), result))
        yield named
        if len(page) < PAGE:
            return
        after = page[-1].idx


def _item_names(jobs: JobStore, job_id: str) -> list[str]:
    return [item_name for page in _named_pages(jobs, job_id) for item_name, _ in page]

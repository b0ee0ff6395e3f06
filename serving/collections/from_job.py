"""A finished batch job saved as a collection: each result's analysis document becomes one image record.

The job's results already are `/v1/analyze` documents, so nothing is analysed again. Items with the same name get
`#<index>` appended (a collection's names are unique); failed items are kept as failed records. Batch results carry
top-k only, not the classifier's wider output, so such a collection has no feature-space outliers.
"""

from pipelines.collections.record import failed_record, record_from_document
from serving.collections.store import CollectionInfo, CollectionStore, RecordedImage
from serving.jobs.errors import JobStateError
from serving.jobs.records import FINAL_JOB_STATES
from serving.jobs.store import JobStore

PAGE = 500


def save_job_as_collection(
    jobs: JobStore, store: CollectionStore, job_id: str, name: str, tenant: str
) -> CollectionInfo:
    job = jobs.get_job(job_id, tenant)
    if job.status not in FINAL_JOB_STATES:
        raise JobStateError(f"job {job_id} is {job.status}; save it as a collection when it has finished")
    info = store.open(name, list(job.stages), [f"job:{job_id}"], tenant, job_id)
    seen: set[str] = set()  # saving again records nothing new: the names are the same and already there
    after = -1
    while True:
        page = jobs.results_page(job_id, after, PAGE)
        images = []
        for result in page:
            item_name = result.name if result.name not in seen else f"{result.name}#{result.idx}"
            seen.add(item_name)
            if result.status == "done" and result.result is not None:
                record = record_from_document(item_name, result.result)
            else:
                record = failed_record(item_name, f"{result.error_kind}: {result.error}")
            images.append(RecordedImage(record, result.result))  # inputs live in the job's object store
        store.add(info.id, images)
        if len(page) < PAGE:
            break
        after = page[-1].idx
    store.finish(info.id)
    return store.get(info.id)

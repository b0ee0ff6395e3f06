"""Training jobs as the API sees them: submit (checked now, so a bad request is a 4xx, never a failed job), read,
list, cancel; and the runner that turns a labelled dataset into a registered, possibly served, model version.

One job runs at a time per replica (they share the model stage with online traffic); jobs left queued or running
by a stopped server run again when it starts (features are cached, so a rerun costs little).
"""

import asyncio
import contextvars
import functools
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from serving.collections.filters import ImageFilter
from serving.collections.store import CollectionStore
from serving.config.model_entry import ModelEntry
from serving.errors import BadRequestError, classify_error, internal_detail, unwrap
from serving.jobs.objects import read_job_input
from serving.jobs.outage import StoreCalls
from serving.jobs.service import JobService
from serving.jobs.tables import located_job
from serving.jobs.tenant_erasure import remove_versions
from serving.model_control import check_unrecorded_folder, owned_versions
from serving.model_versions import VersionPolicy, write_policy
from serving.security.principal import Principal
from serving.service import InferenceService
from serving.trained_models_lock import TrainedModelsLock
from serving.training.compare import Comparison, compare_with_served, decide_promotion
from serving.training.dataset import (
    LabelledImage,
    check_classes,
    collection_dataset,
    labelled_images,
    labelled_in_two_categories,
    read_dataset_files,
    split,
    usable_images,
    without_copies_of_training,
)
from serving.training.deletion import forget_if_removed
from serving.training.features import FeatureCache, embed_images, embedding_backbone
from serving.training.registry import (
    TrainingRecipe,
    check_trainable_name,
    model_policy,
    register_version,
    served_version,
    version_of_job,
)
from serving.training.request import TrainingRequest
from serving.training.runner import JobLease, fit_on_ray
from serving.training.softmax import FitStoppedError, validation_report
from serving.training.store import REGISTERING, THIS_PROCESS, TrainingJob, TrainingStore

logger = logging.getLogger("imgserve.training")


def base_classifier(service: InferenceService, backbone: ModelEntry) -> ModelEntry:
    """The repository classifier whose ONNX file the embedding model cuts (same verified weights file)."""
    for entry in service.repository.entries.values():
        if entry.config.weights.format == "onnx" and entry.config.weights.sha256 == backbone.config.weights.sha256:
            return entry
    raise BadRequestError(f"no served classifier carries the weights of backbone '{backbone.name}'")


class TrainingService:
    def __init__(self, service: InferenceService, jobs: JobService):
        self.service, self.jobs = service, jobs
        self.settings = service.repository.settings
        self._one_at_a_time = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        # a job's claim and last writes, retried through a store outage (it stayed queued, or running for ever)
        self._store_calls = StoreCalls(gauge=False)

    async def store(self) -> TrainingStore:
        await self.jobs.ready()  # migrated
        return TrainingStore(self.jobs.engine)

    def _backbone(self, name: str) -> ModelEntry:
        return embedding_backbone(self.service, name)  # after the owner check: another tenant's name is a 403 first

    async def submit(self, request: TrainingRequest, principal: Principal) -> TrainingJob:
        request.check_role(principal)
        check_trainable_name(self.service.repository, request.model)  # 400: a repository or the OIP image model
        store = await self.store()
        recorded = await owned_versions(store, request.model, principal.tenant)
        check_unrecorded_folder(self.service.repository.settings, request.model, recorded, principal.tenant)
        # an unreadable versions.yaml: 409 now (the job failed once it ran, after a 202 that said nothing of it)
        await asyncio.to_thread(served_version, self.settings.trained_models, request.model)
        backbone = self._backbone(request.backbone)
        base_classifier(self.service, backbone)
        images, _ = await self._dataset(request, principal.tenant)
        check_classes(images)
        gate = self.jobs.gate  # the dataset's images count against the caller's daily quotas, as a batch job's do
        if gate is not None:
            await gate.charge_images(len(images))
        try:
            job = await asyncio.to_thread(
                store.create, principal.tenant, principal.key_id, request.model, request.model_dump()
            )
        except BaseException:
            if gate is not None:
                await gate.refund_images(len(images))
            raise
        self.schedule(job.id)
        return job

    def schedule(self, job_id: str) -> None:
        # A fresh context: the job must not inherit the submitting request's admission time (its queue budget would
        # refuse every image once it ran out) nor its caller.
        task = asyncio.get_running_loop().create_task(self.run(job_id), context=contextvars.Context())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def resume(self) -> None:
        """Run again the jobs a stopped server left queued or running."""
        try:
            store = await self.store()
            for job_id in await asyncio.to_thread(store.unfinished):
                self.schedule(job_id)
        except Exception:  # noqa: BLE001 - the store is down: nothing to resume now, requests will say why
            logger.warning("could not resume training jobs", exc_info=True)

    async def get(self, job_id: str, principal: Principal) -> TrainingJob:
        store = await self.store()
        return await asyncio.to_thread(store.get, job_id, principal.read_scope())

    async def list_jobs(self, principal: Principal) -> list[TrainingJob]:
        store = await self.store()
        return await asyncio.to_thread(store.list_jobs, principal.read_scope())

    async def cancel(self, job_id: str, principal: Principal) -> TrainingJob:
        store = await self.store()
        return await asyncio.to_thread(store.cancel, job_id, principal.tenant)

    async def run(self, job_id: str) -> None:
        async with self._one_at_a_time:
            store = await self.store()
            # retried through a store outage; holding the lock, this process runs no job, so one it holds already
            # is its own claim whose answer was lost (not retaken, the job would stay running under a live runner)
            claim = await self._store_calls.durable(store.claim, job_id, THIS_PROCESS, True)
            if claim is None:
                return  # cancelled while queued, already finished, or run by another live process
            job = await self._store_calls.durable(store.get, job_id)
            try:
                async with JobLease(store, job_id, claim) as lease:
                    result = await self._train(store, job, lease)
            except FitStoppedError:
                result = None  # cancelled (or taken over) during the fit: the job's state is not this runner's
            except Exception as exc:  # noqa: BLE001 - the job fails with the reason; the server goes on
                info = classify_error(exc)
                # an internal error's text is for the server log (it may name server paths), not for the client
                kind = type(unwrap(exc)).__name__
                message = info.message if info.kind != "internal" else f"internal error ({kind}), see the server log"
                logger.warning("training job %s failed: %s", job_id, internal_detail(exc))
                await self._store_calls.durable(store.finish, job_id, "failed", None, message, claim)
                return
            if result is not None:
                await self._store_calls.durable(store.finish, job_id, "completed", result, None, claim)

    async def _train(self, store: TrainingStore, job: TrainingJob, lease: JobLease) -> dict[str, Any] | None:
        """The job's work; None when it was cancelled (or taken over by another runner) on the way."""
        started = time.perf_counter()
        resumed = (job.progress or {}).get("phase") == REGISTERING  # its last runner stopped while registering
        request = TrainingRequest.model_validate(job.request)
        check_trainable_name(self.service.repository, request.model)  # a job queued before the name was refused
        recorded = await owned_versions(store, request.model, job.tenant)  # another tenant's job may have made it
        check_unrecorded_folder(self.service.repository.settings, request.model, recorded, job.tenant)  # or by hand
        served_version(self.settings.trained_models, request.model)  # broken since its submission: fails now, not after
        backbone = self._backbone(request.backbone)
        base = base_classifier(self.service, backbone)
        images, unlabelled = await self._dataset(request, job.tenant)
        labels = check_classes(images)
        train, validation = split(images, request.validation_fraction, request.max_train_per_class)
        wanted = train + validation
        await asyncio.to_thread(store.progress, job.id, "features", 0, len(wanted))

        async def report_progress(done: int) -> None:
            await asyncio.to_thread(store.progress, job.id, "features", done, len(wanted))

        async def check_cancelled() -> bool:
            return not await lease.holds()

        cache = FeatureCache(self.settings.cache_dir, backbone)
        features = await embed_images(
            self.service,
            backbone,
            wanted,
            cache,
            functools.partial(self.read_images, tenant=job.tenant),
            progress=report_progress,
            cancelled=check_cancelled,
        )
        if await check_cancelled():
            return None
        feature_seconds = time.perf_counter() - started
        skipped = {**labelled_in_two_categories(wanted, features.digests), **features.errors}  # name -> why
        if skipped:
            example = next(iter(skipped.items()))
            logger.warning("training job %s: %d images left out, e.g. %s: %s", job.id, len(skipped), *example)
        train, validation = usable_images(train, validation, labels, skipped)
        validation, copies = without_copies_of_training(train, validation, features.digests)
        x = np.stack([features.features[image.name] for image in train])
        y = np.array([labels.index(image.label) for image in train])
        await asyncio.to_thread(store.progress, job.id, "training", 0, len(train))
        fit_started = time.perf_counter()
        head, l2 = await fit_on_ray(x, y, labels, lease.lost)
        fit_seconds = time.perf_counter() - fit_started
        await asyncio.to_thread(store.progress, job.id, "training", len(train), len(train))
        xv = np.stack([features.features[image.name] for image in validation])
        yv = np.array([labels.index(image.label) for image in validation])
        report = validation_report(head.predict(xv), yv, labels)
        held_out = [features.digests[image.name] for image in validation]

        def against(version: str | None) -> Comparison:  # the new version and `version`, on images neither trained on
            folder = None if version is None else self.settings.trained_models / request.model / version
            return compare_with_served(folder, head, xv, yv, labels, held_out)

        current = served_version(self.settings.trained_models, request.model)
        compared = against(current)
        promoted = decide_promotion(request.promote, current, compared.current, compared.new)
        if await check_cancelled():
            return None
        model_root = self.settings.trained_models / request.model
        # the version policy: one writer at a time, on this replica (model control too) and across replicas (a job
        # finishing on another meanwhile registers after this one, against the version this one promoted)
        async with self.service.model_lock, TrainedModelsLock(self.settings.trained_models):
            recorded = await owned_versions(store, request.model, job.tenant)  # checked again: it ran a while
            check_unrecorded_folder(self.service.repository.settings, request.model, recorded, job.tenant)
            if not await asyncio.to_thread(store.begin_registration, job.id, lease.claim):
                return None  # cancelled while it waited for the lock: nothing is registered, nothing promoted
            served_now = served_version(self.settings.trained_models, request.model)  # by another replica too
            if served_now is not None and served_now != current:  # promoted during the fit: must not be undone
                current = served_now  # below, and is what the new version has to beat
                compared = against(current)
                promoted = decide_promotion(request.promote, current, compared.current, compared.new)
            reused = await asyncio.to_thread(version_of_job, model_root, job.id) if resumed else None
            promoted = promoted or (reused is not None and reused == current)  # the stopped run promoted it
            # pin what is served (and any canary) before a newer folder appears: kept when not promoting, and what
            # a promotion whose version does not load puts back ("latest" would then name the broken version)
            if current is not None:
                policy = model_policy(self.settings.trained_models, request.model)
                pinned = policy.model_copy(update={"policy": "specific", "versions": [current]})
                await asyncio.to_thread(write_policy, model_root, pinned)
            else:
                model_root.mkdir(parents=True, exist_ok=True)
                await asyncio.to_thread(write_policy, model_root, VersionPolicy(policy="specific", versions=[]))
            recipe = TrainingRecipe(
                job_id=job.id,
                dataset=request.source,
                backbone=backbone.name,
                base=base.name,
                train_images=len(train),
                validation_images=len(validation),
                skipped_images=len(skipped),
                validation_fraction=request.validation_fraction,
                max_train_per_class=request.max_train_per_class,
                l2=l2,
                seconds=round(time.perf_counter() - started, 2),
                created_by=job.created_by or "anonymous",
                tenant=job.tenant,
            )
            taken = [str(row["version"]) for row in recorded]  # a removed folder's number stays its row's
            trained_on = [features.digests[image.name] for image in train]
            register = functools.partial(register_version, taken=taken, trained_on=trained_on)
            version = reused or await asyncio.to_thread(
                register, self.settings.trained_models, request.model, base, head, recipe, report
            )
            loaded, load_error = False, None
            if promoted:  # loaded under the same lock hold; a version that does not load is registered, not promoted
                promoted, loaded, load_error = await self._promote(request.model, model_root, version)
        metrics = {"validation": report.to_dict(), "current_version_accuracy": compared.current}
        record = (store.record_version, request.model, version, job, labels, metrics, promoted)
        if not await self._store_calls.durable(*record):  # its tenant was erased meanwhile: so is this version
            await asyncio.to_thread(remove_versions, self.settings.trained_models, [(request.model, version)])
            await forget_if_removed(self.service, request.model)  # served here since its promotion: not until a poll
            return None
        await self._store_calls.durable(store.progress, job.id, REGISTERING, 1, 1)  # a finished job's last phase
        if not promoted:  # listed (UNAVAILABLE, with its accuracy) until someone promotes it
            await asyncio.to_thread(self.service.repository.refresh_versions, request.model)
        return {
            "model": request.model,
            "version": version,
            "labels": labels,
            "promoted": promoted,
            "loaded": loaded,
            "load_error": load_error,
            "previous_version": current,
            "previous_version_accuracy": compared.current,  # on the validation images it did not train on
            "accuracy_compared": compared.new,  # the new version's on those images
            "images_compared": compared.images,
            "validation": report.to_dict(),
            "images": {
                "train": len(train),
                "validation": len(validation),
                "skipped": skipped,
                "validation_copies_of_training": copies,
                "unlabelled": unlabelled,
                "features_computed": features.computed,
                "features_cached": len(features.features) - features.computed,
            },
            "seconds": {
                "features": round(feature_seconds, 2),
                "fit": round(fit_seconds, 2),
                "total": round(time.perf_counter() - started, 2),
            },
            "l2": l2,
        }

    async def _dataset(self, request: TrainingRequest, tenant: str) -> tuple[list[LabelledImage], int]:
        """(labelled images, images left out) of the request's folder or collection."""
        if request.dataset is not None:
            root, remote = self.jobs.settings.read_root(tenant), self.jobs.settings.remote_access(tenant)
            return await asyncio.to_thread(labelled_images, request.dataset, root, remote)
        assert request.collection is not None
        store = CollectionStore(self.jobs.engine)
        info = await asyncio.to_thread(store.get, request.collection, tenant)
        job_store = await self.jobs.ready()
        saved = {job for job in map(located_job, info.sources) if job}
        saved |= {info.job_id} if info.job_id else set()
        inputs = {job: await asyncio.to_thread(job_store.input_sources, job) for job in saved}  # each saved job's
        # names and places only; failed images too: a label for one is left out, not taken for a mistyped name
        images = store.iter_images(info.id, ImageFilter(), documents=False)
        recorded = await asyncio.to_thread(list, images)
        return collection_dataset(recorded, request.labels, inputs, info.job_id)

    def read_images(self, images: list[LabelledImage], tenant: str) -> list[bytes | Exception]:
        """The bytes of each image, wherever it is (a folder or fsspec URI, a job's object store or input URI)."""
        limit, root, objects = self.settings.max_image_bytes, self.jobs.settings.read_root(tenant), self.jobs.objects()
        remote = self.jobs.settings.remote_access(tenant)
        out: list[bytes | Exception] = [b""] * len(images)
        files = [i for i, image in enumerate(images) if image.kind == "file"]
        for i, data in zip(files, read_dataset_files([images[i] for i in files], root, remote, limit), strict=True):
            out[i] = data
        for i, image in enumerate(images):
            if image.kind == "file":
                continue
            try:
                out[i] = read_job_input(image.kind, image.location, objects, root, limit, remote)
            except Exception as exc:  # noqa: BLE001 - the image's own error (purged, missing, refused)
                out[i] = exc
        return out

    async def _promote(self, model: str, root: Path, version: str) -> tuple[bool, bool, str | None]:
        """(promoted, loaded, why not loaded), for a caller holding the model lock. The policy names `version` only
        once it loaded here, or where this placement cannot load models (the graph: served from the next deploy)."""
        from serving.model_control import ModelControlUnsupportedError, apply_policy_unlocked  # imports the service

        policy = VersionPolicy(policy="specific", versions=[version])
        try:
            await apply_policy_unlocked(self.service, model, root, policy)
        except ModelControlUnsupportedError as exc:
            await asyncio.to_thread(write_policy, root, policy)
            return True, False, classify_error(exc).message
        except Exception as exc:  # noqa: BLE001 - the policy was put back: registered, not promoted; say why
            return False, False, classify_error(exc).message
        return True, True, None

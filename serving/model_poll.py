"""Poll mode (Triton's `--model-control-mode=poll`): every Ingress replica follows the model folders on disk.

Model control (`serving.model_control`) changes the replica that answers the request. With several Ingress
replicas (or a trained-models folder that every replica mounts on a cluster), the others follow here: every
`IMGSERVE_MODEL_POLL_S` seconds each replica reads what each model folder says it serves (its version policy, canary
split and the files of those versions) and loads, reloads or unloads to match, so a training job, a promotion, a
canary or a rollback made through one replica reaches every replica within one interval.

Reading a folder is a `versions.yaml` read and a few `stat` calls: no weights are read unless something changed.
A state that fails to load is tried once (logged) and then left until the folder changes again; the version served
before stays served, as with an explicit load. An unload through the API is per replica and lasts until the
model's folder changes; to take a model out of service everywhere, promote another version, serve none
(`policy: specific` with no versions) or remove its folder. A model whose folder is removed also leaves the listing
(`/v1/models`, the repository index) at the next poll, as in Triton's poll mode (the default model excepted).
"""

import asyncio
import contextlib
import logging

from serving.config.settings import ServerSettings
from serving.model_control import load_unlocked, unload_unlocked
from serving.model_versions import FolderState, model_state, read_states
from serving.repository import UnknownModelError
from serving.service import InferenceService

logger = logging.getLogger("imgserve.models")


class ModelPoller:
    """The replica's poll loop: every `interval_s` it compares each model folder with `service.model_states` (the
    state this replica last loaded, unloaded or tried to load) and acts on the ones that differ, under the same lock
    as model control. Every state is acted on once, whatever the outcome, so a folder that fails to load is not
    tried again until it changes."""

    def __init__(self, service: InferenceService, settings: ServerSettings, interval_s: float):
        self.service = service
        self.settings = settings
        self.interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Record the folders as they are now (what this replica was built from) and poll from then on. A served
        model whose folder says otherwise (the replica was built before a promotion) is loaded at the first poll."""
        states = await asyncio.to_thread(read_states, self.settings, set(self.service.repository.versions))
        for name, state in states.items():
            if name not in self.service.repository.entries or self._serves(name, state):
                self.service.model_states[name] = state
        self._task = asyncio.get_running_loop().create_task(self._loop())

    def _serves(self, name: str, state: FolderState | None) -> bool:
        """Whether this replica serves the versions `state` names."""
        if state is None or state.error:
            return False
        entry = self.service.repository.entries[name]
        if entry.folder.name == name:  # a flat model folder: one version, nothing to choose
            return True
        canary = self.service.repository.canaries.get(name)
        return state.served == (entry.version, *((canary[0].version,) if canary else ()))

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.poll_once()
            except Exception:  # noqa: BLE001 - polling must outlive any one bad folder
                logger.exception("model poll failed")

    async def poll_once(self) -> list[str]:
        """Bring every model in line with its folder; returns the names loaded or unloaded."""
        states = await asyncio.to_thread(read_states, self.settings, set(self.service.repository.versions))
        acted = []
        for name, state in states.items():
            known = self.service.model_states.get(name, ...)
            if known == state and not self._gone(name, state):
                continue
            async with self.service.model_lock:  # read again under the lock: an API call may have acted meanwhile
                state = await asyncio.to_thread(model_state, self.settings, name)
                if await self._follow(name, state):
                    acted.append(name)
        return acted

    def _gone(self, name: str, state: FolderState | None) -> bool:
        """Whether `name` is listed though its folder is gone (the default model stays: it is never unloaded)."""
        return state is None and name in self.service.repository.versions and name != self.service.default_model

    async def _follow(self, name: str, state: FolderState | None) -> bool:
        service, repository = self.service, self.service.repository
        if self._gone(name, state):  # out of service and out of the listing, as in Triton's poll mode
            if name in repository.entries:
                with contextlib.suppress(UnknownModelError):
                    await unload_unlocked(service, name)
            repository.forget(name)
            service.model_states.pop(name, None)
            logger.info("model %s removed: its folder is gone", name)
            return True
        known = service.model_states.get(name, ...)
        if known == state:
            return False
        service.model_states[name] = state
        if isinstance(known, FolderState) and state is not None and state.same_serving(known):
            if name in repository.versions:  # only the list of versions changed (one registered, not promoted)
                await asyncio.to_thread(repository.refresh_versions, name)
            return False
        if state is None or (not state.served and not state.error):  # removed (the default model), or serves none
            if name not in repository.entries or name == service.default_model:
                if state is not None:  # listed with its versions (a new trained model's first, not promoted), so that
                    await asyncio.to_thread(repository.refresh_versions, name)  # this replica can promote it too
                return False
            with contextlib.suppress(UnknownModelError):
                await unload_unlocked(service, name)
            logger.info("model %s unloaded: its folder serves no version", name)
            return True
        try:
            version = await load_unlocked(service, name)
        except Exception as exc:  # noqa: BLE001 - logged; what was served stays served
            logger.warning("model %s changed on disk and did not load: %s", name, exc)
            return False
        logger.info("model %s version %s loaded: its folder changed", name, version)
        return True

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

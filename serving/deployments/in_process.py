"""Decode and model stages inside the calling replica (`model_location: ingress` in serve_config.yaml).

The default graph gives each stage its own replicas: Ingress -> Decoder -> one batched deployment per model.
Each arrow is a Ray actor call, and on a small machine (2-4 cores) the calls themselves cost more CPU than
decoding a web-size JPEG: a py-spy profile of the Ingress replica under load spends ~75 % of its samples in
Ray's request router and actor-call machinery and ~3 % in imgserve's own code (BENCHMARKS.md).

`InProcessStages` is the picklable recipe the application passes to the Ingress (and to the BatchWorker);
each of those replicas builds the same `Decoder` and `ModelServer` objects the deployments would run, and
wraps them in `LocalHandle`s, which the service layer calls exactly like `DeploymentHandle`s. Dynamic batching
is the same `@serve.batch` queue, filled by the replica's own concurrent requests. Scaling is by Ingress
replicas: every replica holds one copy of each model.
"""

import asyncio
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipelines.decode import DecoderName
from serving.deployments.decoder import Decoder
from serving.deployments.model import ModelServer


class LocalMethod:
    """`handle.method.remote(...)` for an object in this process: starts the call now, returns an awaitable.

    Works for `async def` and plain methods. Arguments that are futures (what another `LocalMethod.remote`
    returned) are awaited first, the way Ray
    resolves a `DeploymentResponse` passed to another handle call. The returned task can be awaited by several
    consumers (one decode feeding several models).
    """

    def __init__(self, method: Callable[..., Any]):
        self._method = method

    async def _call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        args = tuple([await a if isinstance(a, asyncio.Future) else a for a in args])
        kwargs = {k: await v if isinstance(v, asyncio.Future) else v for k, v in kwargs.items()}
        result = self._method(*args, **kwargs)
        return await result if inspect.isawaitable(result) else result  # sync methods (metadata) run inline

    def remote(self, *args: Any, **kwargs: Any) -> "asyncio.Future[Any]":
        return asyncio.ensure_future(self._call(args, kwargs))


class LocalHandle:
    """A stand-in for a `DeploymentHandle` over an object living in the calling replica."""

    def __init__(self, target: object):
        self.target = target

    def __getattr__(self, name: str) -> LocalMethod:
        if name.startswith("_"):
            raise AttributeError(name)
        return LocalMethod(getattr(self.target, name))


@dataclass(frozen=True)
class InProcessStages:
    """What to build inside a replica: the decoder and every model, with the application's options."""

    models: tuple[str, ...]
    backend_options: dict[str, dict[str, Any]] | None = None
    decoder: DecoderName = "pillow"
    reduced_decode: bool = True
    batching: dict[str, Any] | None = None  # overrides every model's config.yaml batching block

    def build(self) -> tuple[LocalHandle, dict[str, LocalHandle]]:
        decoder = LocalHandle(Decoder(self.decoder, self.reduced_decode))
        models = {}
        for name in self.models:
            server = ModelServer(name, self.backend_options, self.decoder, self.reduced_decode)
            if self.batching:
                server.reconfigure({"batching": self.batching})  # what user_config does for a deployment
            models[name] = LocalHandle(server)
        return decoder, models

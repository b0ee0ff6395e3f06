"""`args:` of the imgserve application in serve_config.yaml (pure pydantic: importable without Ray Serve)."""

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class DirectIngressOptions(BaseModel):
    """Listeners each Ingress replica opens itself (serving.deployments.direct_ingress): HTTP and gRPC clients
    reach the replica without Ray Serve's proxy in between. Several replicas on one host share the ports
    (SO_REUSEPORT: the kernel spreads connections over them)."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field(default="127.0.0.1", description="Interface to listen on ('0.0.0.0' for all).")
    http_port: int | None = Field(default=8000, description="HTTP port (the FastAPI app); null = no HTTP listener.")
    grpc_port: int | None = Field(default=9000, description="gRPC port (OIP + ImageService + Health); null = none.")
    max_inflight: int = Field(
        default=1024,
        ge=1,
        description="Requests a replica works on at once over all its listeners; beyond, new ones are answered "
        "503 / RESOURCE_EXHAUSTED (kind 'overloaded') — the direct path's max_queued_requests.",
    )
    max_queue_wait_ms: float | None = Field(
        default=1000.0,
        gt=0,
        description="Queue budget of an admitted request at each of its queues: from admission until a CPU worker "
        "starts its decode, and in the model's batch queue until its batch starts. A request over budget is answered "
        "503 overloaded instead of late (Triton's queue policy with REJECT): served requests stay bounded in latency "
        "under overload. null = no bound.",
    )
    tls_cert: str | None = Field(
        default=None,
        description="PEM certificate (chain) file: both listeners serve TLS (HTTPS, gRPC over TLS) with tls_key. "
        "`imgserve serve --tls-cert` / IMGSERVE_TLS_CERT set it.",
    )
    tls_key: str | None = Field(default=None, description="PEM private key file of tls_cert (unencrypted).")

    @model_validator(mode="after")
    def _tls_pair(self) -> "DirectIngressOptions":
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together: give both or neither")
        return self

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None


Placement = Literal["local", "graph"]


class GraphCallOptions(BaseModel):
    """How an Ingress replica calls the stage deployments in the graph placement (serving.placement.graph)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_images_per_call: int = Field(default=32, ge=1, le=1024, description="Most images sent in one stage call.")
    concurrent_calls: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Stage calls one Ingress replica has in flight at once; images arriving meanwhile wait and go "
        "together in the next call. 1 measured cheapest per image on 2 cores (BENCHMARKS.md); more lowers "
        "latency where stage replicas have cores to spare.",
    )
    max_queued_images: int = Field(
        default=1024,
        ge=1,
        description="Images that may wait in one Ingress replica for a stage call, per kind of request (the images "
        "that need the same stages share a queue); beyond, requests get 503 / "
        "RESOURCE_EXHAUSTED (kind 'overloaded'): the graph's backpressure, like a deployment's max_queued_requests.",
    )


class AppArgs(BaseModel):
    """`args:` of the application in serve_config.yaml. Contradictory settings are rejected here, not at runtime."""

    model_config = ConfigDict(extra="forbid")

    placement: Placement = Field(
        default="graph",
        description="Where the stages run. 'graph': the Decoder, Quality, Metadata and one batched deployment per "
        "model, each scaling on its own (clusters; what KubeRay runs). 'local': every stage inside each Ingress "
        "replica, no actor call per image (one machine; `imgserve serve` picks it when Ray is local). The serve "
        "config must then list no stage deployments (`imgserve serve` removes them).",
    )
    models: list[str] | Literal["all"] = Field(
        default="all", description="Models to deploy; 'all' = every servable one."
    )
    default_model: str = Field(default="mobilenet_v2_imagenet", description="Model used when a request names none.")
    decoder: Literal["pillow", "opencv"] = Field(
        default="pillow",
        description="CPU decoder of the decode stage; 'opencv' reads each JPEG twice (a check pass: OpenCV does not "
        "report damaged data), slower than the default.",
    )
    reduced_decode: bool = Field(default=True, description="Decode JPEG at 1/2..1/8 scale when the model input allows.")
    batching: dict[str, Any] | None = Field(
        default=None,
        description="placement 'local' only: overrides of every model's batching block (keys of config.yaml "
        "`batching`); in the graph, each model deployment takes the same mapping as `user_config: {batching: ...}`.",
    )
    graph_calls: GraphCallOptions = Field(
        default_factory=GraphCallOptions, description="placement 'graph': batching of the Ingress's stage calls."
    )
    ort_threads: int | None = Field(default=None, ge=1, description="ONNX Runtime intra-op threads per model stage.")
    direct_ingress: DirectIngressOptions | None = Field(
        default=None,
        description="Ingress replicas serve HTTP/gRPC on their own listeners (no proxy hop per request). Pair with "
        "`proxy_location: Disabled` to use the usual ports; null = clients go through Ray Serve's proxy.",
    )
    metadata: bool = Field(default=True, description="Run the metadata stage (EXIF, GPS, XMP, colours).")
    quality: bool = Field(default=True, description="Run the quality stage (classical metrics, score, tags).")
    batch_jobs: bool = Field(
        default=True,
        description="Serve /v1/batch and /v1/jobs: the job loop runs in the Ingress (local) or the BatchWorker "
        "deployment (graph).",
    )

    @model_validator(mode="after")
    def _consistent(self) -> "AppArgs":
        if self.batching is not None and self.placement != "local":
            raise ValueError(
                "'batching' overrides apply to placement 'local'; in the graph set each model deployment's "
                "user_config: {batching: ...}"
            )
        if isinstance(self.models, list) and self.default_model not in self.models:
            raise ValueError(f"default_model '{self.default_model}' must be one of models {self.models}")
        return self

    def batch_queue_budget_ms(self) -> float | None:
        """The queue budget that bounds the models' batch queues: `direct_ingress.max_queue_wait_ms` where the models
        run in the Ingress replica that admits the requests (placement local, serving.admission); None where none
        does (no direct listeners, or the graph: a model deployment's batch queue has no budget)."""
        if self.placement != "local" or self.direct_ingress is None:
            return None
        return self.direct_ingress.max_queue_wait_ms


def check_batch_waits(args: AppArgs, model_waits: Mapping[str, tuple[float, str]]) -> None:
    """ValueError when a batch wait is not below the queue budget (`AppArgs.batch_queue_budget_ms`). A request alone
    in its batch waits `batch_wait_timeout_ms` for company before its batch starts, and is answered 503 once it
    waited its budget: each lone request would be refused. `model_waits`: model -> (its config's
    batching.batch_wait_timeout_ms, where that is set); `args.batching`'s value, when given, replaces them all."""
    budget = args.batch_queue_budget_ms()
    if budget is None:
        return
    override = (args.batching or {}).get("batch_wait_timeout_ms")
    if isinstance(override, int | float):
        waits = [("args.batching.batch_wait_timeout_ms", float(override), "every model's, serve config")]
    else:
        waits = [(f"batching.batch_wait_timeout_ms of model '{m}'", w, where) for m, (w, where) in model_waits.items()]
    over = [f"{name}={wait:g} ({where})" for name, wait, where in sorted(waits) if wait >= budget]
    if over:
        raise ValueError(
            f"{'; '.join(over)} is not below args.direct_ingress.max_queue_wait_ms={budget:g}, the queue budget "
            "of a request: one alone in its batch waits for company past its budget and is always answered 503. "
            "Lower the batch wait, or raise max_queue_wait_ms (null: no budget)"
        )


def direct_ingress_args(app_args: Iterable[dict[str, Any] | None]) -> Iterator[dict[str, Any]]:
    """The `direct_ingress` mapping of every application's args that has one (the mapping itself, not a copy)."""
    for args in app_args:
        direct = (args or {}).get("direct_ingress")
        if direct is not None:
            yield direct

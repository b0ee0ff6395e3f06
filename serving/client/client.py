"""`Client`: one API over both edges of an imgserve server, chosen by the URL scheme."""

from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

from serving.client.auth import resolve_api_key
from serving.client.inputs import ImageInput, Images, NamedImage, StreamItems, iter_stream_items, load_images, parse_url
from serving.client.options import RequestOptions
from serving.client.types import Analysis, Classification, ModelList, OperationResult, StreamResult

DEFAULT_TIMEOUT_S = 30.0  # a call's deadline unless the caller gives one
LONG_CALL_TIMEOUT_S = 60.0  # batch, training and model-control calls, unless the caller gives one

if TYPE_CHECKING:
    from serving.client.batch import BatchClient, BatchInputs, BatchJob, JobResult
    from serving.client.training import TrainingClient


class Transport(Protocol):
    def classify(self, images: list[NamedImage], options: RequestOptions) -> list[Classification]: ...

    def analyze(self, images: list[NamedImage], options: RequestOptions) -> list[Analysis]: ...

    def stream(self, images: Iterable[NamedImage], options: RequestOptions) -> Iterator[StreamResult]: ...

    def models(self) -> ModelList: ...

    def operate(self, operation: str, image: NamedImage, options: dict[str, str]) -> OperationResult: ...

    def close(self) -> None: ...


class Client:
    """A client of a running imgserve server, over gRPC (`grpc://host:port`) or HTTP (`http(s)://host:port`).

    Images are encoded image files (JPEG, PNG, ...), one or a list (any iterable): each a path (`str`, `Path`), its
    bytes (`bytes`, `bytearray`, `memoryview`) or a binary file object (`open(path, "rb")`, `io.BytesIO`, read to its
    end; one image, never iterated by lines). Pixel arrays (numpy), dicts and text-mode files raise `TypeError`.
    Every method returns one result per image, in order, with the same types on both transports. `timeout` is each
    call's deadline in seconds (streams have none); calls that fail with UNAVAILABLE are tried again up to `retries`
    times, waiting 0.1 s, 0.2 s, ...
    Failures raise `ImgServeError`; a bad argument (`top_k` < 1, `confidence_threshold` outside 0..1) raises
    `ValueError` before anything is sent.

    `api_key` goes with every call (`Authorization: Bearer <key>` over HTTP, `authorization` metadata over
    gRPC, batch jobs included); None (the default) reads `IMGSERVE_API_KEY`, "" sends none. A server that
    refuses it raises `AuthenticationError` (401 / UNAUTHENTICATED), `PermissionDeniedError` (403 /
    PERMISSION_DENIED) or `RateLimitedError` (429 / RESOURCE_EXHAUSTED, with `retry_after` seconds). The key
    is never shown: not in `repr(client)`, not in error messages.

    `top_k` is the most classes returned per image; `confidence_threshold` (0..1, default 0 = keep all
    `top_k`) leaves out the classes scoring below it, so an image may come back with fewer, or none.

        with Client("grpc://127.0.0.1:9000") as client:
            top = client.classify("cat.jpg")[0].predictions[0]
            sure = client.classify("cat.jpg", top_k=3, confidence_threshold=0.5)[0].predictions
    """

    def __init__(self, url: str, timeout: float | None = None, retries: int = 3, api_key: str | None = None):
        """`timeout`: each call's deadline in seconds; not given: 30 s, and 60 s for batch, training and model-control
        calls (uploads and model loads take longer). A given timeout holds for every call."""
        if (timeout is not None and timeout <= 0) or retries < 0:
            raise ValueError(f"timeout must be > 0 and retries >= 0, got {timeout} and {retries}")
        self.address = parse_url(url)
        self.timeout = DEFAULT_TIMEOUT_S if timeout is None else timeout
        self._long_timeout = max(DEFAULT_TIMEOUT_S, LONG_CALL_TIMEOUT_S) if timeout is None else timeout
        self.retries = retries
        self._api_key = resolve_api_key(api_key)
        self._transport = self._connect()
        self._batch: BatchClient | None = None
        self._training: TrainingClient | None = None

    def _connect(self) -> Transport:
        if self.address.is_grpc:
            from serving.client.grpc_transport import GrpcTransport  # grpc and the stubs only when asked for

            secure = self.address.scheme == "grpcs"
            return GrpcTransport(self.address.target, self.timeout, self.retries, secure, api_key=self._api_key)
        from serving.client.http_transport import HttpTransport

        return HttpTransport(self.address.base_url, self.timeout, self.retries, api_key=self._api_key)

    @property
    def transport(self) -> str:
        return "grpc" if self.address.is_grpc else "http"

    @property
    def authenticated(self) -> bool:
        """Whether calls carry an API key (the argument or IMGSERVE_API_KEY)."""
        return self._api_key is not None

    def classify(
        self, images: Images, model: str | None = None, top_k: int = 5, confidence_threshold: float = 0.0
    ) -> list[Classification]:
        """Top-k per image (the server's default classifier unless `model` is given), without the classes
        scoring below `confidence_threshold` (0..1; 0 keeps all top_k). `images`: one image (a path, bytes or a
        binary file object) or a list of them; a numpy array, a dict or a text-mode file is a TypeError."""
        batch = load_images(images)
        if not batch:
            return []
        return self._transport.classify(batch, RequestOptions(model, top_k, None, confidence_threshold))

    def analyze(
        self,
        images: Images,
        model: str | None = None,
        top_k: int = 5,
        fields: list[str] | None = None,
        confidence_threshold: float = 0.0,
        anonymize: bool = False,
    ) -> list[Analysis]:
        """The analysis stages named in `fields` (all the server has when None) per image; the classification
        leaves out the classes scoring below `confidence_threshold` (0..1; 0 keeps all top_k); `anonymize` drops
        GPS and personal fields from the metadata. `images` as in `classify`: one image (a path, bytes or a binary
        file object) or a list of them."""
        batch = load_images(images)
        if not batch:
            return []
        options = RequestOptions(model, top_k, _fields(fields), confidence_threshold, anonymize)
        return self._transport.analyze(batch, options)

    def stream(
        self,
        images: StreamItems,
        model: str | None = None,
        top_k: int = 5,
        fields: list[str] | None = None,
        confidence_threshold: float = 0.0,
        anonymize: bool = False,
    ) -> Iterator[StreamResult]:
        """Analyze images as they come (any iterable, e.g. a camera generator); one result each, in order.

        An item is an image (a path, bytes or a binary file object) or a `(request_id, image)` pair; otherwise its
        request_id is the path as given (a file object's `name`) or its position. One image on its own is a stream
        of one; a numpy array, a dict or a text-mode file is a TypeError, raised before anything is sent.
        A bad image, or one the key's rate limit or quota refuses (`RateLimitedError`, with the server's
        `retry_after`), yields a result with `error` set and the stream goes on, over both transports; losing the
        server, or a key or role the server refuses (`AuthenticationError`, `PermissionDeniedError`), raises.
        `top_k`, `fields`, `confidence_threshold` and `anonymize` apply to every image, as in `analyze`.
        """
        options = RequestOptions(model, top_k, _fields(fields), confidence_threshold, anonymize)  # checked first
        return self._transport.stream(iter_stream_items(images), options)

    def models(self) -> ModelList:
        """The server's default model and every model in its repository with its state."""
        return self._transport.models()

    def convert(self, image: ImageInput, **options: Any) -> OperationResult:
        """One image (a path, bytes or a binary file object) converted as `/v1/convert` does: `format`, `quality`,
        `max_side`, ... (GET /v1/formats).

        webp = client.convert("photo.jpg", format="webp", quality=80, max_side=2048)
        Path("photo.webp").write_bytes(webp.data); webp.report["compression_ratio"]

        Over HTTP the image comes as itself and the report from its `X-Imgserve-*` headers (no base64).
        """
        return self._transport.operate("convert", _one_image(image, "convert"), _option_text(options))

    def enhance(self, image: ImageInput, **options: Any) -> OperationResult:
        """One image (a path, bytes or a binary file object) enhanced as `/v1/enhance` does: `auto=True` (the
        default without other options), manual factors (`brightness=1.2`, ...), `ops="clahe,sharpen"`, and any
        conversion option for the output."""
        return self._transport.operate("enhance", _one_image(image, "enhance"), _option_text(options))

    # ---- batch jobs (HTTP only) ---------------------------------------------------------------------
    @property
    def batch(self) -> "BatchClient":
        """The batch-job API (`/v1/batch`, `/v1/jobs`): submit, wait, results, cancel."""
        if self.address.is_grpc:
            raise ValueError("batch jobs are served over HTTP: use an http(s):// server URL")
        if self._batch is None:
            from serving.client.batch import BatchClient

            self._batch = BatchClient(self.address.base_url, self._long_timeout, self.retries, api_key=self._api_key)
        return self._batch

    def submit_batch(self, inputs: "BatchInputs", **options: Any) -> "BatchJob":
        """Upload image files and/or folders (walked for images) as one batch job; returns at once (202).

        Options: model, top_k, stages, webhook_url, chunk_bytes, chunk_files (files per upload request),
        idempotency_key (the job-creating request's `Idempotency-Key`; default a new uuid4, reused by its retries).
        """
        return self.batch.submit(inputs, **options)

    def wait(self, job: "BatchJob | str", **options: Any) -> "BatchJob":
        """Poll a batch job until it is completed, failed or cancelled (options: poll_s, timeout, on_progress)."""
        return self.batch.wait(job, **options)

    def watch(self, job: "BatchJob | str", timeout: float | None = None) -> "Iterator[BatchJob]":
        """A batch job's state each time it changes, pushed by the server (server-sent events), until it ends."""
        return self.batch.watch(job, timeout)

    def job_results(self, job: "BatchJob | str") -> "Iterator[JobResult]":
        """Every recorded result of a batch job, in index order."""
        return self.batch.results(job)

    @property
    def training(self) -> "TrainingClient":
        """Training jobs and model control (HTTP): submit, wait, cancel; load, unload, promote versions."""
        if self.address.is_grpc:
            raise ValueError("training jobs and model control are served over HTTP: use an http(s):// server URL")
        if self._training is None:
            from serving.client.training import TrainingClient

            self._training = TrainingClient(
                self.address.base_url, self._long_timeout, self.retries, api_key=self._api_key
            )
        return self._training

    def close(self) -> None:
        self._transport.close()
        if self._training is not None:
            self._training.close()
        if self._batch is not None:
            self._batch.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        key = ", api_key=***" if self._api_key is not None else ""  # whether one is set, never the key
        return f"Client({self.address.base_url!r}, timeout={self.timeout}, retries={self.retries}{key})"


def _one_image(image: ImageInput, call: str) -> NamedImage:
    """The one image `convert`/`enhance` take: a list of one is that image; a list of several or none is a
    TypeError (only the first of several was sent, and an empty list was an IndexError)."""
    images = load_images(image)
    if len(images) != 1:
        raise TypeError(f"{call} takes one image, not {len(images)}: call it once per image (or submit a batch job)")
    return images[0]


def _option_text(options: dict[str, Any]) -> dict[str, str]:
    """Options as the server reads them (query parameters / gRPC map): booleans as true/false, None left out."""
    return {k: (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in options.items() if v is not None}


def _fields(fields: list[str] | None) -> tuple[str, ...] | None:
    return None if fields is None else tuple(fields)

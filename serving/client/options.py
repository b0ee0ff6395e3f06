"""`RequestOptions`: what one classify, analyze or stream call asks for, checked once and handed to a transport."""

from dataclasses import dataclass


@dataclass(frozen=True)
class RequestOptions:
    """The options of one call, the same for every image of it.

    `model` None means the server's default; `fields` None means every analysis stage the server has
    (classify ignores it); `confidence_threshold` 0 keeps all `top_k` classes. A bad `top_k` (< 1) or
    threshold (outside 0..1, NaN included) raises `ValueError` here, before anything is sent.
    """

    model: str | None = None
    top_k: int = 5
    fields: tuple[str, ...] | None = None
    confidence_threshold: float = 0.0
    anonymize: bool = False  # analyze/stream: drop GPS and personal fields from metadata

    def __post_init__(self) -> None:
        if self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if not 0.0 <= self.confidence_threshold <= 1.0:  # NaN fails too
            raise ValueError(f"confidence_threshold must be between 0 and 1, got {self.confidence_threshold}")
        object.__setattr__(self, "confidence_threshold", float(self.confidence_threshold))

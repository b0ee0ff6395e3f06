"""`POST /v1/training-jobs`'s request: where the labelled images are, which model gets the new version, and how it
may be served."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from serving.security.errors import PermissionDeniedError
from serving.security.principal import Principal

DEFAULT_BACKBONE = "mobilenet_v2_embedding"


class TrainingRequest(BaseModel):
    """`POST /v1/training-jobs`."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(pattern=r"^[a-z0-9][a-z0-9_\-]{0,63}$", description="Model to add a version to (or create).")
    dataset: str | None = Field(
        default=None,
        max_length=4096,
        description="Folder of one sub-folder per category: file:// under IMGSERVE_BATCH_ALLOWED_ROOT, s3:// or gs://.",
    )
    collection: str | None = Field(
        default=None, max_length=200, description="Or an analysed collection of the caller's tenant (id or name)."
    )
    labels: dict[str, str] | None = Field(
        default=None,
        description="With `collection`: image name -> category (images not named are left out); without it the "
        "first folder of each image's name is its category, below the folders all its images share (an uploaded "
        "archive's name is none).",
    )
    validation_fraction: float = Field(default=0.2, ge=0.05, le=0.5, description="Held out of each category.")
    max_train_per_class: int | None = Field(default=None, ge=1, description="Train on at most this many per category.")
    backbone: str = Field(default=DEFAULT_BACKBONE, description="Embedding model the features come from.")
    promote: Literal["if_better", "always", "never"] = Field(
        default="if_better",
        description="Serve the new version: when it beats the served one on the same validation images (a new "
        "model: always), always, or never (registered only; promote it later).",
    )

    @model_validator(mode="after")
    def _one_source(self) -> "TrainingRequest":
        if (self.dataset is None) == (self.collection is None):
            raise ValueError("give exactly one of 'dataset' (a folder URI) or 'collection'")
        if self.labels is not None and self.collection is None:
            raise ValueError("'labels' go with a 'collection' (a folder's labels are its sub-folders)")
        if self.labels is not None and (len(self.labels) > 1_000_000 or any(not v for v in self.labels.values())):
            raise ValueError("'labels' maps at most 1,000,000 image names to non-empty categories")
        return self

    @property
    def source(self) -> str:
        return self.dataset or f"collection:{self.collection}"

    def check_role(self, principal: Principal) -> None:
        """Submitting takes the operator role (the route checks it); `promote: always` is a promotion whatever the
        new version's accuracy, which model control keeps for admins: an operator may train with `if_better` (the
        new version served only when it beats the served one) or `never`. PermissionDeniedError (403) otherwise."""
        if self.promote == "always" and not principal.has("admin"):
            raise PermissionDeniedError(
                f"promote=always needs the admin role, as promoting does; this key is {principal.role}"
            )

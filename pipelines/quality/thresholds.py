"""The versioned thresholds config (`thresholds.yaml`): tag rules, score penalties, level cut-offs.

Every number that decides a tag or a score lives in the YAML, not in code, so that it can be
calibrated on a user's own labelled photos (`tooling.quality.calibrate`) and versioned: a report
carries the `version` of the thresholds that produced it. An edited file has a number (`version: 4`); a calibration
writes ``"<number>+<digest>"`` (`calibrated_version`), the digest being that of everything that decides a verdict,
so two calibrations from the same base tell apart whenever their thresholds differ. Loading checks that digest
against the content (`check_version_digest`): a calibrated file edited by hand would otherwise keep naming, in every
result, thresholds it no longer holds.
"""

import hashlib
import json
import math
import os
import re
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from pipelines.quality.metrics import METRIC_NAMES, REGION_METRICS


def _known_metric(value: str) -> str:
    if value not in METRIC_NAMES:
        raise ValueError(f"unknown metric {value!r}")
    return value


MetricName = Annotated[str, AfterValidator(_known_metric)]  # a `QualityMetrics` number field

DEFAULT_THRESHOLDS_PATH = Path(__file__).with_name("thresholds.yaml")
LEVELS = ("LOW", "MEDIUM", "HIGH", "ULTRA")
VERSION_FORM = re.compile(r"[1-9][0-9]*(\+[0-9a-f]{8,64})?")  # 4, or "5+1f3a9c0e" from a calibration
DIGEST_CHARS = 8


class _Frozen(BaseModel):
    # allow_inf_nan: a NaN threshold silently disabled its tag, an infinite one made it fire on every image
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class Condition(_Frozen):
    """One metric compared with a threshold."""

    metric: MetricName = Field(description="a `QualityMetrics` field name")
    op: Literal["<", ">"] = Field(description="the condition holds when `metric op threshold`")
    threshold: float = Field(description="decision value, in the metric's units")
    scale: float = Field(gt=0, description="metric distance from the threshold that gives confidence 0.73")
    pixel_level: bool = Field(
        False,
        description="the metric sees single pixels of the file as stored (noise, JPEG blocks): on a photo larger than"
        " the working image the model, which sees it smaller still, cannot veto it",
    )


class TagRule(_Frozen):
    """When a tag fires from classical metrics. The first condition is the one calibration tunes."""

    description: str = Field(description="what the tag means, for the docs and API")
    kind: Literal["defect", "positive", "info"] = Field(description="defects lower the score; positives praise")
    match: Literal["any", "all"] = Field("any", description="combine conditions with OR (any) or AND (all)")
    conditions: tuple[Condition, ...] = Field(min_length=1)
    requires: tuple[str, ...] = Field((), description="tags that must also fire")
    excludes: tuple[str, ...] = Field((), description="tags that suppress this one")
    implied_by: tuple[str, ...] = Field((), description="tags that make this one fire too (motion_blur -> blurry)")
    region: str | None = Field(
        None, description="the metric holding where the tag was measured (a box); None: the whole frame"
    )

    @field_validator("region")
    @classmethod
    def _known_region(cls, value: str | None) -> str | None:
        if value is not None and value not in REGION_METRICS:
            raise ValueError(f"unknown region metric {value!r}; known: {sorted(REGION_METRICS)}")
        return value

    def references(self) -> set[str]:
        """Tags this rule depends on."""
        return set(self.requires) | set(self.excludes) | set(self.implied_by)


class StackTerm(_Frozen):
    """One standardised metric in a stacked decision: weight * (value - mean) / scale."""

    metric: MetricName
    mean: float
    scale: float = Field(gt=0)
    weight: float


class TagStack(_Frozen):
    """A learned decision for one tag from the model's probability and the classical metrics (logistic):

    p_tag = sigmoid(bias + model_weight * logit(model probability) + sum of terms); the tag fires at p_tag >= fire_at.
    Fitted by `python -m tooling.quality_mos.tune` on the training part's out-of-fold predictions."""

    bias: float
    model_weight: float
    terms: tuple[StackTerm, ...] = ()
    fire_at: float = Field(ge=0, le=1)

    def probability(self, values: Mapping[str, Any], model_probability: float) -> float:
        p = min(max(model_probability, 1e-6), 1 - 1e-6)
        z = self.bias + self.model_weight * math.log(p / (1 - p))
        for term in self.terms:
            value = values.get(term.metric)
            if value is not None:
                z += term.weight * (float(value) - term.mean) / term.scale
        return 1.0 / (1.0 + math.exp(-max(min(z, 50.0), -50.0)))


class TagCombination(_Frozen):
    """One tag's own `confirm` / `alone` (overrides the block's defaults), or a learned `stack` (replaces them)."""

    confirm: float = Field(1.0, ge=0, le=1)
    alone: float = Field(1.0, ge=0, le=1)
    stack: TagStack | None = None


class ModelCombination(_Frozen):
    """How learned per-tag probabilities combine with classical evidence (used when probabilities are given)."""

    confirm: float = Field(0.3, ge=0, le=1, description="classical tag is kept only if the model gives >= this")
    alone: float = Field(0.85, ge=0, le=1, description="model probability that fires a tag without classical evidence")
    score_weight: float = Field(0.5, ge=0, le=1, description="weight of the model's 0-100 score in the final score")
    tags: dict[str, TagCombination] = Field(default_factory=dict, description="per-tag confirm/alone overrides")

    def stack_for(self, name: str) -> TagStack | None:
        own = self.tags.get(name)
        return own.stack if own else None

    def for_tag(self, name: str) -> tuple[float, float]:
        """(confirm, alone) for tag `name`."""
        own = self.tags.get(name)
        return (own.confirm, own.alone) if own else (self.confirm, self.alone)


class Penalty(_Frozen):
    """Score penalty: severity ramps linearly from 0 at `best` to 1 at `worst` of `metric`."""

    metric: MetricName
    best: float
    worst: float
    weight: float = Field(ge=0, le=1, description="share of the score lost at full severity")


class ScoreConfig(_Frozen):
    """Penalties per defect and the score cut-offs of the levels."""

    penalties: dict[str, Penalty]
    levels: dict[Literal["MEDIUM", "HIGH", "ULTRA"], float] = Field(description="lowest score of each level")

    @model_validator(mode="after")
    def _ordered_levels(self) -> "ScoreConfig":
        missing = {"MEDIUM", "HIGH", "ULTRA"} - set(self.levels)
        if missing:  # was a bare KeyError
            raise ValueError(f"levels must give MEDIUM, HIGH and ULTRA; missing {sorted(missing)}")
        if not 0 <= self.levels["MEDIUM"] <= self.levels["HIGH"] <= self.levels["ULTRA"] <= 100:
            raise ValueError("levels must satisfy 0 <= MEDIUM <= HIGH <= ULTRA <= 100")
        return self


class Thresholds(_Frozen):
    """The whole config file."""

    version: Annotated[int, Field(ge=1)] | str = Field(
        description="a number bumped by every edit, or '<number>+<digest>' written by a calibration"
    )
    description: str = ""
    working_max_side: int = Field(512, ge=64, description="longer side of the working image the metrics assume")
    tags: dict[str, TagRule]
    model: ModelCombination = ModelCombination()
    score: ScoreConfig

    @field_validator("version")
    @classmethod
    def _version_form(cls, value: int | str) -> int | str:
        if isinstance(value, str):
            if not VERSION_FORM.fullmatch(value):
                raise ValueError(f"version must be a number or '<number>+<hex digest>', got {value!r}")
            return int(value) if value.isdigit() else value
        return value

    @property
    def version_number(self) -> int:
        """The number part of `version` (4 for both 4 and "4+1f3a9c0e")."""
        return version_number(self.version)

    def content_digest(self, chars: int = DIGEST_CHARS) -> str:
        """Sha256 (first `chars` hex digits) of everything that decides a verdict (all but `version` and
        `description`)."""
        data = self.model_dump(mode="json", exclude={"version", "description"})
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:chars]

    @property
    def version_digest(self) -> str | None:
        """The digest part of a calibrated `version` ("1f3a9c0e" of "5+1f3a9c0e"); None for a plain number."""
        parts = str(self.version).split("+", 1)
        return parts[1] if len(parts) == 2 else None

    def calibrated_version(self) -> str:
        """The version a calibration that produced these thresholds writes: the base's number + 1 and the digest."""
        return calibrated_version(self.version, self.content_digest())

    @model_validator(mode="after")
    def _references_resolve(self) -> "Thresholds":
        for name, rule in self.tags.items():
            unknown = rule.references() - set(self.tags)
            if unknown:
                raise ValueError(f"tag {name!r} refers to unknown tags {sorted(unknown)}")
        unknown_model_tags = set(self.model.tags) - set(self.tags)
        if unknown_model_tags:
            raise ValueError(f"model: combination for unknown tags {sorted(unknown_model_tags)}")
        self.decision_order()  # raises on a cycle
        return self

    def decision_order(self) -> tuple[str, ...]:
        """Tag names ordered so that every tag comes after the tags it refers to."""
        order: list[str] = []
        pending = list(self.tags)
        while pending:
            ready = [n for n in pending if self.tags[n].references() <= set(order)]
            if not ready:
                raise ValueError(f"tags {pending} refer to each other in a cycle")
            order += ready
            pending = [n for n in pending if n not in ready]
        return tuple(order)


def version_number(version: int | str) -> int:
    """The number part of a version (4 for both 4 and "4+1f3a9c0e")."""
    return int(str(version).split("+", 1)[0])


def calibrated_version(base_version: int | str, digest: str) -> str:
    """What a calibration from `base_version` writes: the base's number + 1 and the first `DIGEST_CHARS` hex digits of
    what it produced (thresholds' content, a re-fitted score model's head), so that two calibrations of one base
    tell apart in every result that names them."""
    return f"{version_number(base_version) + 1}+{digest[:DIGEST_CHARS]}"


def check_version_digest(thresholds: Thresholds, source: str | Path) -> Thresholds:
    """`thresholds` as read from `source`, refused (ValueError) when its version names a digest ("6+653ef004") that is
    not its content's: a calibrated file edited by hand kept its version, so results named the calibrated thresholds
    while other ones decided them. Plain numbers are the editor's to bump and are not checked."""
    named = thresholds.version_digest
    if named is not None:
        actual = thresholds.content_digest(len(named))
        if actual != named:
            raise ValueError(
                f"{source}: version {thresholds.version} names content digest {named} but the thresholds in it digest "
                f"to {actual} (edited after calibration?): bump the version to a plain number, "
                f"{thresholds.version_number + 1}, or calibrate again"
            )
    return thresholds


def load_thresholds(path: str | Path | None = None) -> Thresholds:
    """Read and validate a thresholds YAML (the packaged default when `path` is None); a calibrated version must
    still name the file's content (`check_version_digest`)."""
    if path is None:
        return default_thresholds()
    return check_version_digest(Thresholds.model_validate(yaml.safe_load(Path(path).read_text())), path)


THRESHOLDS_ENV = "IMGSERVE_QUALITY_THRESHOLDS"


def served_thresholds() -> Thresholds:
    """The thresholds this server (or CLI) serves: the file `IMGSERVE_QUALITY_THRESHOLDS` names (an operator's, one
    `imgserve quality calibrate` wrote), else the packaged ones; read once per file."""
    return _thresholds_at(os.environ.get(THRESHOLDS_ENV) or None)


@lru_cache(maxsize=4)
def _thresholds_at(path: str | None) -> Thresholds:
    return load_thresholds(path)


@lru_cache(maxsize=1)
def default_thresholds() -> Thresholds:
    """The packaged `thresholds.yaml`, parsed once."""
    thresholds = Thresholds.model_validate(yaml.safe_load(DEFAULT_THRESHOLDS_PATH.read_text()))
    return check_version_digest(thresholds, DEFAULT_THRESHOLDS_PATH)


def tag_kinds(thresholds: Thresholds | None = None) -> dict[str, str]:
    """Every tag name the server can give, with its kind (defect, positive, info): the packaged thresholds' tags plus
    those of the served thresholds (an operator's file, fixed at start-up), whose kinds win."""
    kinds = {name: rule.kind for name, rule in default_thresholds().tags.items()}
    if thresholds is not None:
        kinds |= {name: rule.kind for name, rule in thresholds.tags.items()}
    return kinds


def tag_vocabulary(thresholds: Thresholds | None = None) -> frozenset[str]:
    """The names of `tag_kinds`: metrics label values and collection filters are checked against it."""
    return frozenset(tag_kinds(thresholds))


def dump_thresholds(thresholds: Thresholds, path: str | Path) -> None:
    """Write `thresholds` as YAML (fields in declaration order)."""
    data = thresholds.model_dump(mode="json")
    Path(path).write_text(yaml.safe_dump(data, sort_keys=False, width=120))

"""Quality verdicts in `/metrics`: how many images got one, their tags, levels and scores, per tenant.

`record_quality` is called once per image of an answered `InferenceService.analyze` that got a quality verdict
(HTTP, gRPC and batch jobs; not the verdicts image operations ask for before and after their work, nor the images of
a request that failed). The tenant is the caller's (`serving.security.gate.current_principal`; "default" when auth
is off; a batch job's items run as its tenant, serving.jobs.runner). Label values stay bounded: tenants are made by
admins, tags outside the thresholds' vocabulary count as "other", a tag's `kind` is its rule's (defect, positive,
info; "other"), levels are the four of `pipelines.quality.thresholds.LEVELS`. deploy/README.md ("Watching quality")
shows how to read the series.
"""

from pipelines.quality import QualityReport, Thresholds
from pipelines.quality.thresholds import LEVELS, tag_kinds
from serving.metrics import QUALITY_IMAGES, QUALITY_LEVELS, QUALITY_SCORE, QUALITY_TAGS
from serving.security.gate import current_principal

OTHER = "other"


def record_quality(report: QualityReport, thresholds: Thresholds | None = None) -> None:
    """Count one image's quality verdict under the current caller's tenant."""
    tenant = current_principal().tenant
    kinds = tag_kinds(thresholds)
    QUALITY_IMAGES.labels(tenant).inc()
    QUALITY_LEVELS.labels(tenant, report.level if report.level in LEVELS else OTHER).inc()
    QUALITY_SCORE.labels(tenant).observe(report.score)
    for name in dict.fromkeys(tag.name if tag.name in kinds else OTHER for tag in report.tags):
        QUALITY_TAGS.labels(tenant, name, kinds.get(name, OTHER)).inc()

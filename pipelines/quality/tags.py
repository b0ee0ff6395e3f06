"""Quality tags from classical metrics, optionally combined with a learned model's per-tag probabilities.

Rules come from the thresholds config (`thresholds.yaml`); the vocabulary and rules are documented in
docs/QUALITY.md. Combination with a model, per tag, when `model_probs` has that tag:

- classical evidence fires and the model gives p >= ``confirm``  -> tag (the model can veto, except pixel-level
  evidence of a photo larger than the working image: noise or JPEG blocks the model's small input cannot show);
- the model alone gives p >= ``alone``                           -> tag (the model can add);
- or, for a tag with a learned ``stack``, its logistic of the model's logit and metrics >= ``fire_at``: the stack
  decides, and the tag's `rule` says so (its probability against ``fire_at``, then the classical rule, whose metrics
  stay in the evidence with the stack's);
- otherwise no tag. Tags the model does not cover stay purely classical. ``confirm``/``alone`` are per tag
  (``model.tags``) or the block's defaults. A tag implied by another that fired (motion_blur -> blurry) fires.

Confidence is a logistic function of how far the deciding metric is past its threshold (0.5 at the
threshold, 0.73 one `scale` beyond it); with a model it is the larger of that and p.
"""

import math
from dataclasses import dataclass, field

from pipelines.quality.metrics import QualityMetrics
from pipelines.quality.sharpness import WHOLE_FRAME
from pipelines.quality.thresholds import Condition, TagRule, TagStack, Thresholds, default_thresholds

Evidence = dict[str, float | int | list[float] | None]


@dataclass(frozen=True)
class Tag:
    """One quality tag on one image, with the evidence that produced it."""

    name: str
    confidence: float  # 0.5 .. 1
    source: str  # "classical", "model" or "classical+model"
    rule: str  # the rule that decided, in words, e.g. "noise_sigma > 3.5 or impulse_fraction > 0.004"
    evidence: Evidence = field(default_factory=dict)  # metric values (and model_probability) behind the tag


def condition_margin(condition: Condition, value: float) -> float:
    """Signed distance past the threshold in units of `scale` (> 0 when the condition holds)."""
    distance = value - condition.threshold if condition.op == ">" else condition.threshold - value
    return distance / condition.scale


def _confidence(margin: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, margin))))


def evaluate_rule(rule: TagRule, values: dict[str, float | int | None]) -> tuple[bool, float]:
    """(fires, confidence) of a rule's conditions alone, ignoring requires/excludes."""
    margins = []
    for condition in rule.conditions:
        value = values.get(condition.metric)
        margins.append(-math.inf if value is None else condition_margin(condition, float(value)))
    holding = [m for m in margins if m > 0]
    if rule.match == "all":
        fires = len(holding) == len(margins)
        return fires, _confidence(min(margins)) if fires else 0.0
    return bool(holding), _confidence(max(holding)) if holding else 0.0


def model_cannot_see(rule: TagRule, values: dict[str, float | int | None]) -> bool:
    """True when a `pixel_level` condition holds on a photo that was shrunk for the working image: evidence finer
    than anything the model's input shows, which its probability must not veto."""
    scale = values.get("working_scale")
    if scale is None or float(scale) >= 1.0:
        return False
    for condition in rule.conditions:
        value = values.get(condition.metric)
        if condition.pixel_level and value is not None and condition_margin(condition, float(value)) > 0:
            return True
    return False


def measurable(rule: TagRule, values: dict[str, float | int | None]) -> bool:
    """Whether the image has a value for any of the rule's metrics. Where it has none (a strip under 16 px has no
    2-D sharpness), the model's probability alone does not give the tag: its input is the image blown up to 256 px
    (a 17-px strip 15x), which it reads as blurry with certainty."""
    return any(values.get(condition.metric) is not None for condition in rule.conditions)


def describe_rule(rule: TagRule) -> str:
    """Human-readable form of a rule's conditions."""
    joiner = " and " if rule.match == "all" else " or "
    text = joiner.join(f"{c.metric} {c.op} {c.threshold:g}" for c in rule.conditions)
    text += "".join(f" or {t}" for t in rule.implied_by)
    extra = [f"with {r}" for r in rule.requires] + [f"not {e}" for e in rule.excludes]
    return text if not extra else f"{text} ({', '.join(extra)})"


def describe_stack(stack: TagStack, probability: float, classical_rule: str) -> str:
    """The rule of a tag its learned stack decided: the stack's probability against `fire_at`, its inputs, and the
    classical rule it replaced (whose metrics stay in the evidence)."""
    inputs = ", ".join(["logit(model_probability)", *(t.metric for t in stack.terms)])
    return (
        f"learned stack: p {probability:.4f} >= fire_at {stack.fire_at:g} (logistic of {inputs}); "
        f"classical rule, not deciding here: {classical_rule}"
    )


def assign_tags(
    metrics: QualityMetrics,
    thresholds: Thresholds | None = None,
    model_probs: dict[str, float] | None = None,
) -> list[Tag]:
    """Tags for one image, in the config's order. See the module docstring for the combination rules."""
    return tags_from_values(metrics.as_dict(), thresholds, model_probs)


def tags_from_values(
    values: Evidence,
    thresholds: Thresholds | None = None,
    model_probs: dict[str, float] | None = None,
) -> list[Tag]:
    """`assign_tags` on a plain dict of metric values (e.g. metrics stored as JSON)."""
    thresholds = thresholds or default_thresholds()
    probs = model_probs or {}
    combine = thresholds.model
    fired: dict[str, Tag] = {}
    for name in thresholds.decision_order():  # a tag after those it requires or excludes
        rule = thresholds.tags[name]
        classical, confidence = evaluate_rule(rule, values)
        implied = [fired[t] for t in rule.implied_by if t in fired]
        if implied and not classical:
            classical, confidence = True, max(t.confidence for t in implied)
        p = probs.get(name)
        source = "classical"
        stack = combine.stack_for(name) if p is not None else None
        stacked = 0.0
        if stack is not None:  # a learned decision from the probability and the metrics
            stacked = stack.probability(values, p)
            classical, confidence, source = stacked >= stack.fire_at, stacked, "classical+model"
        elif p is not None:
            confirm, alone = combine.for_tag(name)
            if classical and (p >= confirm or model_cannot_see(rule, values)):
                confidence, source = max(confidence, p), "classical+model"
            elif p >= alone and measurable(rule, values):
                classical, confidence, source = True, p, "model"
            else:
                classical = False
        if implied:  # an implying tag that fired decides (motion_blur is blurry), whatever this tag's own model says
            classical, confidence = True, max(confidence if classical else 0.0, *(t.confidence for t in implied))
        if not classical:
            continue
        if any(r not in fired for r in rule.requires) or any(e in fired for e in rule.excludes):
            continue
        evidence: Evidence = {c.metric: values.get(c.metric) for c in rule.conditions}
        described = describe_rule(rule)
        if stack is not None:
            evidence.update({t.metric: values.get(t.metric) for t in stack.terms})
            evidence["combined_probability"] = round(stacked, 4)
            evidence["fire_at"] = stack.fire_at
            if stacked >= stack.fire_at:  # the stack decided (below fire_at, a tag implying this one did)
                described = describe_stack(stack, stacked, described)
        for tag in implied:  # the implying tag's metrics, not its model probability
            evidence.update({k: v for k, v in tag.evidence.items() if k != "model_probability"})
        if p is not None:
            evidence["model_probability"] = p
        evidence["region"] = list((values.get(rule.region) if rule.region else None) or WHOLE_FRAME)
        fired[name] = Tag(name, round(confidence, 4), source, described, evidence)
    return [fired[name] for name in thresholds.tags if name in fired]

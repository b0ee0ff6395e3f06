"""What an enhancement does: parsed options, the auto plan from the quality stage's tags, and applying it.

    options = EnhanceOptions.parse(auto="true")                 # or brightness=1.2, ops="clahe,white_balance"
    steps = options.steps(tags=["low_light", "color_cast"])     # auto: only what fixes the tags, in order
    rgb, applied = apply_steps(rgb, steps)

Auto mode maps each defect tag to the operation that undoes it and applies them in a fixed order (noise before
anything amplifies it, colour before tone, detail last); a photo without such a tag is returned untouched. Tags that
no pixel operation can fix (low_resolution, odd_aspect_ratio, low_information) are left alone, and so are `blurry`
and `motion_blur`: sharpening cannot restore lost detail and raises noise (`ops=sharpen` does it on request), and
JPEG blocks (`compression_artifacts`), which smoothing trades for blur.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipelines.enhance import operations as op
from pipelines.errors import InvalidOptionError

FACTOR_RANGE = (0.1, 3.0)
MANUAL_FACTORS = ("brightness", "contrast", "saturation", "sharpness")
# Targets of the auto exposure correction (mean luma 0-1): a dark photo is brought up to LOW_LIGHT_TARGET, an
# overexposed one down to OVEREXPOSED_TARGET. Both sit inside the quality stage's `well_exposed` band (0.25-0.7).
LOW_LIGHT_TARGET = 0.40
OVEREXPOSED_TARGET = 0.45


@dataclass(frozen=True)
class Operation:
    name: str
    description: str
    # rgb -> (rgb, parameters used), or None when the image needs nothing from this operation
    apply: Callable[[np.ndarray], tuple[np.ndarray, dict[str, float]] | None]


Applied = tuple[np.ndarray, dict[str, float]] | None


def _fixed(function: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], Applied]:
    return lambda rgb: (function(rgb), {})


def _exposure_up(rgb: np.ndarray) -> Applied:
    out, stops = op.exposure_to(rgb, LOW_LIGHT_TARGET)
    return (out, {"stops": round(stops, 3)}) if stops > 0.05 else None


def _exposure_down(rgb: np.ndarray) -> Applied:
    out, stops = op.exposure_to(rgb, OVEREXPOSED_TARGET)
    return (out, {"stops": round(stops, 3)}) if stops < -0.05 else None


def _recover_highlights(rgb: np.ndarray) -> Applied:
    """Exposure down to OVEREXPOSED_TARGET, then CLAHE: what was blown out keeps texture instead of turning flat
    grey (exposure alone lowers clipped white to an even grey, which the quality stage often scores lower). On
    brightened training photos (BIQ2021 training part, +1.5 to +2.7 EV): `overexposed` gone on 97 % of those tagged
    and the score up on 98 %, against 80 % and 81 % for the exposure change alone (docs/IMAGE_OPERATIONS.md)."""
    lowered = _exposure_down(rgb)
    if lowered is None:
        return None
    return op.clahe(lowered[0]), lowered[1]


# Canonical order: an explicit `ops=` list and the auto plan both run in this order.
OPERATIONS: dict[str, Operation] = {
    o.name: o
    for o in (
        Operation("denoise", "edge-preserving noise reduction (bilateral, strength from the noise estimate)",
                  _fixed(op.denoise)),
        Operation("white_balance", "robust white balance: near-grey surfaces made neutral (Lab)",
                  _fixed(op.white_balance_robust)),
        Operation("grey_world", "grey-world white balance: equal channel means", _fixed(op.white_balance_grey_world)),
        Operation("exposure_up", f"exposure raised in linear light to mean luma {LOW_LIGHT_TARGET}", _exposure_up),
        Operation("exposure_down", f"exposure lowered in linear light to mean luma {OVEREXPOSED_TARGET}",
                  _exposure_down),
        Operation("recover_highlights", f"exposure lowered to mean luma {OVEREXPOSED_TARGET}, then local contrast"
                  " restored (CLAHE): blown areas keep texture", _recover_highlights),
        Operation("shadows", "shadow recovery: dark tones lifted, highlights kept", _fixed(op.shadows)),
        Operation("auto_levels", "levels stretched to the 0.5 % / 99.5 % luma percentiles", _fixed(op.auto_levels)),
        Operation("equalize", "histogram equalisation of lightness", _fixed(op.equalize)),
        Operation("clahe", "local contrast (CLAHE on lightness, clip 2, 8x8 tiles)", _fixed(op.clahe)),
        Operation("gamma", "gamma 1.2 (mid-tones brighter)", _fixed(lambda rgb: op.gamma(rgb, 1.2))),
        Operation("saturate", "colour saturation x1.3 (Lab chroma)", _fixed(lambda rgb: op.saturation(rgb, 1.3))),
        Operation("desaturate", "colour saturation x0.75 (Lab chroma)",
                  _fixed(lambda rgb: op.saturation(rgb, 0.75))),
        Operation("sharpen", "unsharp mask on lightness (amount 0.6, radius 1 px)", _fixed(op.sharpen)),
    )
}  # fmt: skip
# Quality tag -> the operation that undoes it (auto mode).
AUTO_FIXES: dict[str, str] = {
    "noisy": "denoise",
    "color_cast": "white_balance",
    "low_light": "exposure_up",
    "overexposed": "recover_highlights",
    "low_contrast": "auto_levels",
    "undersaturated": "saturate",
    "oversaturated": "desaturate",
}
_MANUAL: dict[str, Callable[[np.ndarray, float], np.ndarray]] = {
    "brightness": op.brightness_factor,
    "contrast": op.contrast_factor,
    "saturation": op.saturation_factor,
    "sharpness": op.sharpness_factor,
}


@dataclass(frozen=True)
class Step:
    name: str  # an OPERATIONS name or a manual factor
    reason: str  # "tag low_light", "requested"
    factor: float | None = None  # manual factors only


@dataclass(frozen=True)
class EnhanceOptions:
    auto: bool = False
    ops: tuple[str, ...] = ()
    factors: dict[str, float] = field(default_factory=dict)  # manual factor name -> value in FACTOR_RANGE

    @classmethod
    def parse(cls, /, auto: Any = None, ops: Any = None, **factors: Any) -> "EnhanceOptions":
        """From query parameters or JSON values (None or "": not given; a name that is no option is refused whatever
        its value). Nothing given means auto."""
        unknown = sorted(k for k in factors if k not in MANUAL_FACTORS)
        if unknown:
            raise InvalidOptionError(
                f"unknown enhancement options {unknown}; manual factors: {', '.join(MANUAL_FACTORS)}"
            )
        values: dict[str, float] = {}
        for name, raw in factors.items():
            if raw is None or raw == "":
                continue
            try:
                if isinstance(raw, bool):  # JSON true is no factor (float(True) read it as 1.0)
                    raise TypeError
                value = float(raw)
            except (TypeError, ValueError):
                raise InvalidOptionError(f"{name}={raw!r}: expected a number") from None
            if not FACTOR_RANGE[0] <= value <= FACTOR_RANGE[1]:
                raise InvalidOptionError(f"{name}={value} is out of range: {FACTOR_RANGE[0]}..{FACTOR_RANGE[1]}")
            values[name] = value
        names = _op_names(ops)
        auto_flag = _auto_flag(auto)
        if auto_flag is None:
            auto_flag = not names and not values
        return cls(auto_flag, names, values)

    def steps(self, tags: Sequence[str] = ()) -> list[Step]:
        """Operations to run, in order: requested ops and the auto plan's (canonical order), then manual factors."""
        wanted: dict[str, str] = {name: "requested" for name in self.ops}
        if self.auto:
            for tag in tags:
                if tag in AUTO_FIXES:
                    wanted.setdefault(AUTO_FIXES[tag], f"tag {tag}")
        ordered = [Step(name, wanted[name]) for name in OPERATIONS if name in wanted]
        return ordered + [
            Step(name, "requested", self.factors[name]) for name in MANUAL_FACTORS if name in self.factors
        ]


def _auto_flag(raw: Any) -> bool | None:
    if raw is None or raw == "":
        return None
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise InvalidOptionError(f"auto={raw!r}: expected true or false")


def _op_names(raw: Any) -> tuple[str, ...]:
    if raw is None or raw == "":
        return ()
    items = raw if isinstance(raw, list | tuple) else str(raw).split(",")
    names = tuple(dict.fromkeys(str(item).strip().lower() for item in items if str(item).strip()))
    unknown = [n for n in names if n not in OPERATIONS]
    if unknown:
        raise InvalidOptionError(f"unknown operations {unknown}; available: {', '.join(OPERATIONS)}")
    return names


def apply_steps(rgb: np.ndarray, steps: Sequence[Step]) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Run `steps` on an HxWx3 uint8 image; returns the result and what was applied (name, reason, parameters)."""
    applied = []
    for step in steps:
        if step.factor is not None:
            rgb = _MANUAL[step.name](rgb, step.factor)
            applied.append({"operation": step.name, "reason": step.reason, "factor": step.factor})
            continue
        result = OPERATIONS[step.name].apply(rgb)
        if result is None:
            continue
        rgb, parameters = result
        applied.append({"operation": step.name, "reason": step.reason, **parameters})
    return rgb, applied


def should_revert(options: EnhanceOptions, applied: Sequence[dict[str, Any]], before: float, after: float) -> bool:
    """Auto mode's "do no harm" rule, first half: the quality stage scored the enhanced image lower than the input
    and auto steps ran. The caller then also makes the same output without the auto steps (`without_auto`: the
    requested ops and factors kept, the conversion as asked) and returns whichever of the two scores higher, so a
    drop that the resize or the encoding causes does not undo a fix. Manual edits are never reverted."""
    return options.auto and any(auto_step(step) for step in applied) and after < before


def auto_step(step: dict[str, Any]) -> bool:
    return str(step.get("reason", "")).startswith("tag ")


def without_auto(options: EnhanceOptions) -> EnhanceOptions:
    return EnhanceOptions(False, options.ops, options.factors)


def describe_options() -> dict[str, Any]:
    """What `GET /v1/enhance/options` answers."""
    return {
        "operations": [{"name": o.name, "description": o.description} for o in OPERATIONS.values()],
        "manual_factors": {name: {"min": FACTOR_RANGE[0], "max": FACTOR_RANGE[1], "neutral": 1.0} for name in
                           MANUAL_FACTORS},
        "auto": {"fixes": AUTO_FIXES, "order": list(OPERATIONS), "reverted_when": "the quality score would fall"},
    }  # fmt: skip

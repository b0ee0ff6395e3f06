"""Image enhancement: pure array operations (`operations`) and the plans that choose them (`plan`)."""

from pipelines.enhance.plan import (
    AUTO_FIXES,
    OPERATIONS,
    EnhanceOptions,
    Step,
    apply_steps,
    describe_options,
    should_revert,
    without_auto,
)

__all__ = [
    "AUTO_FIXES",
    "OPERATIONS",
    "EnhanceOptions",
    "Step",
    "apply_steps",
    "describe_options",
    "should_revert",
    "without_auto",
]

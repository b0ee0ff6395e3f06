"""On/off settings read from the environment, one rule for all of them (README "Configuration"): 1, true, yes or on
turn a switch on, 0, false, no or off turn it off (any case, spaces around ignored); anything else is a ValueError
naming the variable, which `imgserve serve` turns into its one-line refusal before anything starts."""

import os
from collections.abc import Mapping

ON_WORDS = ("1", "true", "yes", "on")
OFF_WORDS = ("0", "false", "no", "off")


def env_switch(name: str, default: bool, env: Mapping[str, str] | None = None) -> bool:
    """The switch `name` (unset: `default`)."""
    raw = (os.environ if env is None else env).get(name)
    if raw is None:
        return default
    text = raw.strip().lower()
    if text not in ON_WORDS + OFF_WORDS:
        spelled = "1, true, yes or on, or 0, false, no or off"
        raise ValueError(f"{name}={raw!r}: expected {spelled} (unset: {'on' if default else 'off'})")
    return text in ON_WORDS

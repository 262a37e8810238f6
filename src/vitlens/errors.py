"""The one exception family vitlens raises for bad input.

Every message names what was wrong (file, parameter, value) and what would be valid, so that the CLI can
print it as one line and a user can act on it without a traceback.
"""

from __future__ import annotations

from collections.abc import Sequence


class VitlensError(Exception):
    """Base class of every error vitlens raises on purpose."""


class ModelError(VitlensError):
    """A model spec, checkpoint or architecture vitlens cannot use for the request."""


class ExplainerError(VitlensError):
    """An unknown explainer, a bad parameter, or a method that does not apply to the model."""


class InputError(VitlensError):
    """Images, targets or files that are malformed, unreadable or out of range."""


class DataError(VitlensError):
    """A data set, generator or layout problem."""


class MetricError(VitlensError):
    """An unknown metric, a bad metric parameter, or inputs (maps, masks, boxes) a metric cannot score."""


class Cancelled(VitlensError):
    """Work stopped before it finished: its caller went away or its time budget was spent."""


class InputWarning(UserWarning):
    """Input vitlens can use but only in part (e.g. the first frame of a multi-frame DICOM or multi-page TIFF)."""


def did_you_mean(name: str, options: Sequence[str]) -> str:
    """``" (did you mean 'rollout'?)"`` for the closest of ``options`` (difflib), or ``""``."""
    import difflib

    close = difflib.get_close_matches(str(name), [str(o) for o in options], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""

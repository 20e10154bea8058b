"""Backend outputs, checked against the model's declared outputs on every batch: a backend that
returns the wrong shape or type, or NaN, fails the run naming the output, instead of giving a
VALID performance run and 0% accuracy."""

from __future__ import annotations

import numpy as np

from backends.base import Batch
from harness.errors import UserError
from harness.models.check import TensorSpec


class BadOutput(UserError):
    """A backend returned outputs the model does not declare."""


def check_outputs(outputs: object, declared: tuple[TensorSpec, ...], samples: int) -> Batch:
    """``outputs`` if every declared output is there with its type, its shape for ``samples``
    samples, and (floats) finite values; BadOutput otherwise."""
    if not isinstance(outputs, dict):
        raise BadOutput(f"returned a {type(outputs).__name__}, not a dict of output arrays")
    for spec in declared:
        value = outputs.get(spec.name)
        if value is None:
            raise BadOutput(f"returned no {spec.name} output (the model declares {spec})")
        if not isinstance(value, np.ndarray):
            raise BadOutput(f"returned {spec.name} as a {type(value).__name__}, not a numpy array")
        fits = value.ndim == len(spec.shape) and value.shape[:1] == (samples,)
        fits = fits and all(
            want is None or want == have
            for want, have in zip(spec.shape[1:], value.shape[1:], strict=False)
        )
        if value.dtype.name != spec.dtype or not fits:
            shape = ",".join(map(str, value.shape))
            raise BadOutput(
                f"returned {spec.name} as {value.dtype} [{shape}] for a batch of {samples}; "
                f"the model declares {spec}"
            )
        if value.dtype.kind in "fc" and not np.isfinite(value).all():
            raise BadOutput(f"returned non-finite values (NaN or infinity) in {spec.name}")
    return outputs

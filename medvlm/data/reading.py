"""Reading the data sets a recipe or a command names: the one way sources are read.

Training, evaluation, prediction, scoring, inspection, conversion, previews and UIR's inquiries all
read through :func:`read_spec`, so each gets the same things: the source's own record checks, the
image checks (missing, unreadable or root-escaping images are bad records like any other, raised
under the ``error`` policy and counted under ``skip``) and the prompt style.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError

from medvlm.data.images import ImageCheck, ImageCheckMode, check_images, drop_bad_images
from medvlm.data.prompts import apply_prompt_style
from medvlm.data.records import Sample
from medvlm.data.sources import ReadReport, read_source
from medvlm.errors import DataError
from medvlm.recipe import SourceSpec, format_validation_error

Policy = Literal["error", "skip"]


@dataclass
class SourceRead:
    """One source, read: its samples (prompt style applied) and what was skipped, and why."""

    spec: SourceSpec
    samples: list[Sample]
    report: ReadReport
    images: ImageCheck
    rejected: list[Sample]  # read, then dropped for a bad image (skip policy; counted in ``report``)
    records_skipped: int  # records the source itself could not use (bad images not included)

    def summary(self) -> dict[str, Any]:
        """The record written into ``data_report.json``."""
        return {**self.report.summary(), "path": self.spec.path, "split": self.spec.split,
                "images": self.images.summary(), "problems": [str(p) for p in self.report.problems[:50]]}


def read_spec(spec: SourceSpec, *, policy: Policy = "error", prompt_style: str = "plain",
              image_check: ImageCheckMode = "header", limit: int | None = None) -> SourceRead:
    """Read one source. ``limit`` (if tighter than the spec's own) caps the samples read."""
    limits = [n for n in (spec.limit, limit) if n is not None]
    found, report = read_source(spec.dataset, spec.path, spec.split, policy=policy,
                                limit=min(limits) if limits else None, image_root=spec.image_root, **spec.options)
    records_skipped = report.skipped
    images = check_images(found, image_check)
    kept = drop_bad_images(found, images, report, file=spec.path)
    report.kept = len(kept)
    styled = [apply_prompt_style(sample, prompt_style) for sample in kept]
    return SourceRead(spec, styled, report, images, [s for s in found if s.id in images.bad], records_skipped)


def read_samples(specs: Iterable[SourceSpec], *, policy: Policy = "error", prompt_style: str = "plain",
                 image_check: ImageCheckMode = "header") -> tuple[list[Sample], list[dict[str, Any]]]:
    """Every sample the specs name, in order (each source ``repeat`` times), with one report per source."""
    samples: list[Sample] = []
    reports: list[dict[str, Any]] = []
    for spec in specs:
        read = read_spec(spec, policy=policy, prompt_style=prompt_style, image_check=image_check)
        reports.append(read.summary())
        samples.extend(read.samples * spec.repeat)
    return samples, reports


def source_spec(dataset: str, path: str | None, split: str, *, image_root: str | None = None,
                options: dict[str, Any] | None = None, limit: int | None = None) -> SourceSpec:
    """A :class:`SourceSpec` from a command's ``--dataset/--path/--split/...`` arguments."""
    try:
        return SourceSpec(dataset=dataset, path=path, split=split, image_root=image_root, options=options or {},
                          limit=limit)
    except ValidationError as exc:
        raise DataError(format_validation_error(exc, "arguments").replace("key '", "option '--"),
                        file=path) from None

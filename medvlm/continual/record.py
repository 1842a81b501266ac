"""``continual.json``: the one schema the continual runner writes and reports read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from medvlm.data.jsonfiles import load_json
from medvlm.errors import DataError
from medvlm.io import write_json


class ContinualRecord(BaseModel):
    """Method, tasks and probes of a continual run, its accuracy matrix (percent; row 0 = the initial
    model, then one row per task; one column per probe) and the forgetting metrics computed from it."""

    model_config = ConfigDict(extra="forbid")

    method: str
    seed: int
    tasks: list[str]
    probes: list[str]
    accuracy: list[list[float | None]]
    metrics: dict[str, float | None]
    # SAC ratio chosen per task (sac.ratio: auto): task name → criterion, every ratio tried with its
    # validation score and general retention, and the chosen ratio
    ratio_sweeps: dict[str, dict[str, Any]] = {}
    provenance: dict[str, Any] = {}

    @model_validator(mode="after")
    def _shape(self) -> ContinualRecord:
        if len(self.accuracy) != len(self.tasks) + 1:
            raise ValueError(f"accuracy has {len(self.accuracy)} rows; expected {len(self.tasks) + 1} "
                             "(the initial model, then one per task)")
        for index, row in enumerate(self.accuracy):
            if len(row) != len(self.probes):
                raise ValueError(f"accuracy row {index} has {len(row)} values for {len(self.probes)} probes")
        return self

    def write(self, path: str | Path) -> None:
        write_json(path, self.model_dump(mode="json"))


def read_continual_record(path: str | Path) -> ContinualRecord:
    try:
        return ContinualRecord.model_validate(load_json(Path(path)))
    except ValidationError as exc:
        error = exc.errors()[0]
        key = ".".join(str(part) for part in error["loc"]) or None
        raise DataError(f"not a continual.json: {error['msg']}", file=str(path), key=key) from None

"""The response shapes of the API, for its OpenAPI document (and so for schemathesis)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class ErrorBody(BaseModel):
    error: str = Field(description="A short code, e.g. not_an_image, too_many_files, invalid_query.")
    detail: str = Field(description="What was wrong and what is accepted.")


class AttributeClass(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    class_: str = Field(alias="class", description="The most probable class.")
    probability: float


class Prediction(BaseModel):
    path: str | None = Field(description="The uploaded file name (null if the part had none).")
    labels: list[str] = Field(description="The decided labels, in schema order.")
    scores: dict[str, float] = Field(description="Every label's probability.")
    attributes: dict[str, AttributeClass]
    maps: dict[str, str] | None = Field(
        None, description="With explain=true: each mapped label's map over the image, a PNG data URL."
    )


class DecisionRule(BaseModel):
    policy: str = Field(description="per-label, global, fixed or top-k.")
    k: int | None = None
    threshold: float | None = Field(None, description="The threshold of every label under fixed.")
    source: Literal["artifact", "query"]


class PredictResponse(BaseModel):
    predictions: list[Prediction]
    decision: DecisionRule


class SchemaResponse(BaseModel):
    labels: list[str]
    attributes: list[dict[str, Any]]
    thresholds: dict[str, float]
    decision: dict[str, Any]
    model: dict[str, Any]
    preprocessing: dict[str, Any]
    training: dict[str, Any]
    limits: dict[str, int | None]
    batching: dict[str, int | float] = Field(
        description="max_batch: images per forward pass at most (1: no batching); max_wait_ms: how long a "
        "request waits for others to join its batch."
    )
    runtime: dict[str, str] = Field(
        description="runtime: torch or onnx; precision: the one that runs (fp32, bf16 or int8; fp32 where "
        "the hardware lacks the asked one)."
    )


class Health(BaseModel):
    status: Literal["ok"]


ERRORS = {code: {"model": ErrorBody} for code in (400, 413, 415, 422, 500)}

"""The label schema: which outputs a model has and how targets and logits are laid out.

A schema holds ordered **labels** (independent yes/no outputs, one sigmoid
each) and ordered **attributes** (named outputs with exclusive classes, one
softmax each). It fixes

- the targets: labels as int8 ``[N, n_labels]`` with 1 present, 0 absent and
  -1 unknown; attributes as int64 ``[N, n_attributes]`` of class indices, -1
  unknown;
- the logits: one tensor ``[B, n_labels + sum(classes)]``, labels first, then
  each attribute's classes in order.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from mlic.errors import SchemaError

UNKNOWN = -1
"""Target value of a label or attribute whose truth is not known."""


@dataclass(frozen=True)
class Attribute:
    """A named output with mutually exclusive classes, e.g. size: small / medium / large."""

    name: str
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        _check_sequence(self.classes, f"classes of attribute {self.name!r}")
        object.__setattr__(self, "classes", tuple(self.classes))
        _check_name(self.name, "attribute")
        if len(self.classes) < 2:
            raise SchemaError(
                f"attribute {self.name!r} has {len(self.classes)} class(es); it needs at least 2"
            )
        for c in self.classes:
            _check_name(c, f"class of attribute {self.name!r}")
        _check_unique(self.classes, f"classes of attribute {self.name!r}")

    def class_index(self, value: str) -> int:
        """Index of class ``value``; a ``SchemaError`` lists the valid classes."""
        try:
            return self.classes.index(value)
        except ValueError:
            raise SchemaError(
                f"{value!r} is not a class of attribute {self.name!r}; expected one of {list(self.classes)}"
            ) from None


@dataclass(frozen=True)
class LabelSchema:
    """Ordered labels and attributes; the layout of targets and logits."""

    labels: tuple[str, ...] = ()
    attributes: tuple[Attribute, ...] = field(default=())

    def __post_init__(self) -> None:
        _check_sequence(self.labels, "labels")
        _check_sequence(self.attributes, "attributes")
        object.__setattr__(self, "labels", tuple(self.labels))
        object.__setattr__(
            self,
            "attributes",
            tuple(a if isinstance(a, Attribute) else Attribute(*a) for a in self.attributes),
        )
        for name in self.labels:
            _check_name(name, "label")
        _check_unique(self.labels + tuple(a.name for a in self.attributes), "label and attribute names")
        if not self.labels and not self.attributes:
            raise SchemaError("a schema needs at least one label or one attribute")
        object.__setattr__(self, "_index", {name: i for i, name in enumerate(self.labels)})

    # -- layout ---------------------------------------------------------------
    @property
    def n_labels(self) -> int:
        return len(self.labels)

    @property
    def n_attributes(self) -> int:
        return len(self.attributes)

    @property
    def attribute_names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.attributes)

    @property
    def num_outputs(self) -> int:
        """Width of the logit tensor."""
        return self.n_labels + sum(len(a.classes) for a in self.attributes)

    @property
    def label_slice(self) -> slice:
        """Columns of the logits that hold the labels."""
        return slice(0, self.n_labels)

    @property
    def attribute_slices(self) -> tuple[slice, ...]:
        """Columns of the logits that hold each attribute's classes, in order."""
        slices, start = [], self.n_labels
        for a in self.attributes:
            slices.append(slice(start, start + len(a.classes)))
            start += len(a.classes)
        return tuple(slices)

    def attribute(self, name: str) -> Attribute:
        for a in self.attributes:
            if a.name == name:
                return a
        raise SchemaError(f"no attribute {name!r}; attributes are {list(self.attribute_names)}")

    def label_index(self, name: str) -> int:
        try:
            return self._index[name]
        except KeyError:
            raise SchemaError(f"no label {name!r} in the schema ({self.n_labels} labels)") from None

    # -- targets --------------------------------------------------------------
    def encode(
        self,
        labels: Iterable[str] = (),
        attributes: Mapping[str, str | None] | None = None,
        unknown: Iterable[str] = (),
    ) -> tuple[np.ndarray, np.ndarray]:
        """Targets of one image: the labels present, the attribute classes, the unknown labels.

        Labels not named are absent (0); labels in ``unknown`` are -1;
        attributes not given, or given as ``None``, are -1.
        """
        label_row = np.zeros(self.n_labels, dtype=np.int8)
        for name in labels:
            label_row[self.label_index(name)] = 1
        for name in unknown:
            label_row[self.label_index(name)] = UNKNOWN
        attr_row = np.full(self.n_attributes, UNKNOWN, dtype=np.int64)
        for name, value in (attributes or {}).items():
            a = self.attribute(name)
            if value is not None:
                attr_row[self.attribute_names.index(name)] = a.class_index(value)
        return label_row, attr_row

    def decode(self, label_row: np.ndarray, attr_row: np.ndarray) -> dict:
        """Inverse of :meth:`encode`: names of present and unknown labels, attribute classes."""
        return {
            "labels": [n for n, v in zip(self.labels, label_row) if v == 1],
            "unknown": [n for n, v in zip(self.labels, label_row) if v == UNKNOWN],
            "attributes": {
                a.name: (a.classes[int(v)] if v != UNKNOWN else None)
                for a, v in zip(self.attributes, attr_row)
            },
        }

    def check_targets(self, labels: np.ndarray, attributes: np.ndarray) -> None:
        """Raise ``SchemaError`` unless the target matrices fit this schema."""
        if labels.ndim != 2 or labels.shape[1] != self.n_labels:
            raise SchemaError(f"label targets have shape {labels.shape}; expected [N, {self.n_labels}]")
        self.check_attributes(attributes)
        if labels.shape[0] != attributes.shape[0]:
            raise SchemaError("label and attribute targets have different numbers of rows")
        if labels.size and not ((labels >= UNKNOWN) & (labels <= 1)).all():
            raise SchemaError("label targets must be 1 (present), 0 (absent) or -1 (unknown)")

    def check_attributes(self, attributes: np.ndarray) -> None:
        """Raise ``SchemaError`` unless ``attributes`` is ``[N, n_attributes]`` of -1 or class indices."""
        if attributes.ndim != 2 or attributes.shape[1] != self.n_attributes:
            raise SchemaError(
                f"attribute targets have shape {attributes.shape}; expected [N, {self.n_attributes}]"
            )
        for j, a in enumerate(self.attributes):
            col = attributes[:, j]
            if ((col < UNKNOWN) | (col >= len(a.classes))).any():
                raise SchemaError(
                    f"attribute {a.name!r} targets must be -1 or a class index below {len(a.classes)}"
                )

    # -- serialisation --------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "labels": list(self.labels),
            "attributes": [{"name": a.name, "classes": list(a.classes)} for a in self.attributes],
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> LabelSchema:
        expected = "expected {'labels': [...], 'attributes': [{'name': ..., 'classes': [...]}]}"
        try:
            attributes = data.get("attributes", ())
            _check_sequence(attributes, "attributes")
            return cls(data.get("labels", ()), tuple(Attribute(a["name"], a["classes"]) for a in attributes))
        except SchemaError as e:
            raise SchemaError(f"malformed schema: {e}") from None
        except (KeyError, TypeError, AttributeError) as e:
            raise SchemaError(f"malformed schema: {e!r}; {expected}") from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> LabelSchema:
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as e:
            raise SchemaError(f"schema is not valid JSON: {e}") from None


def _check_sequence(value: object, what: str) -> None:
    """Refuse a lone string where a list of names belongs (it would split into characters)."""
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise SchemaError(f"{what} must be a list of names, got {value!r}")


def _check_name(name: object, what: str) -> None:
    if not isinstance(name, str) or not name.strip():
        raise SchemaError(f"{what} name must be a non-empty string, got {name!r}")


def _check_unique(names: tuple[str, ...], what: str) -> None:
    seen: set[str] = set()
    dupes = sorted({n for n in names if n in seen or seen.add(n)})
    if dupes:
        raise SchemaError(f"duplicate {what}: {dupes}")

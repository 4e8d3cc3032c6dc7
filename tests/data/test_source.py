"""Tests of mlic.data.formats.source and what every text reader shares: errors, paths, schemas, fuzzing."""

from __future__ import annotations

import csv
import io
import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, note
from hypothesis import strategies as st

from helpers import error_of, fuzz, mutated, png, read_or_error, write
from mlic.data.formats import load_data, load_source
from mlic.data.formats.csv_multihot import read_multihot_csv
from mlic.data.formats.csv_tags import read_tags_csv
from mlic.data.formats.jsonl import read_jsonl
from mlic.schema import Attribute, LabelSchema

# -- errors common to the readers ------------------------------------------------
READERS = [read_tags_csv, read_multihot_csv, read_jsonl, load_source]


@pytest.mark.parametrize("reader", READERS)
def test_file_not_found(tmp_path, reader):
    message = error_of(reader, tmp_path / "nope.csv" if reader is not read_jsonl else tmp_path / "n.jsonl")
    assert "file not found" in message


@pytest.mark.parametrize("reader", [read_tags_csv, read_multihot_csv, read_jsonl])
@pytest.mark.parametrize("text", ["", "\n  \n", "\ufeff"])
def test_empty_file(tmp_path, reader, text):
    f = write(tmp_path / "empty.csv", text)
    assert error_of(reader, f) == f"{f}: the file is empty"


def test_not_utf8_names_the_line(tmp_path):
    f = write(tmp_path / "l.csv", b"path,tags\na.jpg,cat\nb.jpg,caf\xe9\n")
    message = error_of(read_tags_csv, f)
    assert message.startswith(f"{f}:3:") and "UTF-8" in message


@pytest.mark.parametrize("reader", [read_tags_csv, read_multihot_csv])
def test_csv_wrong_number_of_fields(tmp_path, reader):
    f = write(tmp_path / "l.csv", 'path,tags\na.jpg,"x\ny"\n\nb.jpg,x,extra\n')
    message = error_of(reader, f)
    assert message.startswith(f"{f}:5:") and "3 fields" in message and "header has 2" in message


@pytest.mark.parametrize("reader", [read_tags_csv, read_multihot_csv])
def test_csv_empty_path(tmp_path, reader):
    f = write(tmp_path / "l.csv", "image,tags\na.jpg,1\n  ,1\n")
    message = error_of(reader, f)
    assert message.startswith(f"{f}:3: field 'image':") and "empty image path" in message


def test_csv_module_errors_become_data_errors(tmp_path):
    f = write(tmp_path / "l.csv", "path,tags\na.jpg," + "x" * 200 + "\n")
    old = csv.field_size_limit(50)
    try:
        message = error_of(read_tags_csv, f)
    finally:
        csv.field_size_limit(old)
    assert message.startswith(f"{f}:2:") and "malformed CSV" in message


def test_no_labels_found(tmp_path):
    message = error_of(read_tags_csv, write(tmp_path / "l.csv", "path,tags\na.jpg,\n"))
    assert "l.csv" in message and "no labels" in message


FUZZ_SCHEMA = LabelSchema(("cat", "dog"), (Attribute("size", ("small", "large")),))


BIG_DIGITS = "9" * 5000  # more digits than int() converts by default


CELLS = [
    "", " ", "1", "0", "-1", "1.0", "-1.0", "true", "False", "yes", "no", "2", "nan", "inf", "-0", "1e999",
    "²", "٣", "x" + BIG_DIGITS, "cat", "dog", "cat dog", "small", "large", "a.jpg", "b", "x/y.png",
    "../up.jpg", "/abs.jpg", "a\x00b", "d\x00/x.jpg", "a" * 300, "a" * 300 + "/b", '"', '""', ",", "\t",
    "\n", "\r", "\ufeff", "\u2028", "é",
]  # fmt: skip


HEADER_CELLS = [
    "path", "image", "Image_Name", "file", "tags", "labels", "Label", "cat", "dog", "size", "", " ",
]  # fmt: skip


CSV_SEEDS = [
    b"path,tags\na.jpg,dog cat\nb.jpg,\nc,dog\n",
    b"path,cat,dog,size\na.jpg,1,0,small\nb.jpg,0,,large\nc.jpg,-1,true,\n",
    b"image\ttags\ta\tb\na.png\tcat\t1\t2\n",
    b'\xef\xbb\xbfpath,tags\r\n"a,1.jpg","cat,dog"\r\n',
]


JSONL_SEEDS = [
    b'{"path": "a.jpg", "labels": ["cat"], "unknown": ["dog"], "attributes": {"size": "small"}}\n'
    b'{"path": "b.jpg", "labels": [], "attributes": {"size": 2}}\n\n{"path": "c"}\n',
]


TOKENS = [
    b",", b"\t", b'"', b"\n", b"\r\n", b"\r", b"\x00", b"\xff", b"\xc3", b"\xef\xbb\xbf", b"[", b"]", b"{",
    b"}", b":", b"null", b"NaN", b"-Infinity", b"1e999", BIG_DIGITS.encode(), "²".encode(), b"true",
    b'"path"', b"[" * 3000, b'"' + b"a" * 300 + b'"',
]  # fmt: skip


def _encode(draw, text: str) -> bytes:
    data = text.encode("utf-8", "surrogatepass")
    if draw(st.booleans()):
        data = b"\xef\xbb\xbf" + data
    return data


@st.composite
def csv_texts(draw) -> bytes:
    """Plausible CSV: a header from likely column names, rows of odd cells, quoted or not, any width."""
    cell = st.sampled_from(CELLS) | st.text(max_size=6)
    width = draw(st.integers(1, 5))
    header = draw(
        st.lists(st.sampled_from(HEADER_CELLS) | st.text(max_size=4), min_size=width, max_size=width)
    )
    rows = [header, *draw(st.lists(st.lists(cell, max_size=width + 1), max_size=6))]
    delimiter = draw(st.sampled_from([",", "\t", ";"]))
    if draw(st.booleans()):
        out = io.StringIO()
        quoting = draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL, csv.QUOTE_NONNUMERIC]))
        csv.writer(out, delimiter=delimiter, quoting=quoting).writerows(rows)
        text = out.getvalue()
    else:  # no quoting at all: delimiters, quotes and newlines inside cells break the rows
        newline = draw(st.sampled_from(["\n", "\r\n", "\r"]))
        text = newline.join(delimiter.join(r) for r in rows) + draw(st.sampled_from(["", newline]))
    return _encode(draw, text)


JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from(CELLS)
    | st.text(max_size=5)
)


JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda v: st.lists(v, max_size=3) | st.dictionaries(st.text(max_size=4), v, max_size=3),
    max_leaves=6,
)


NAMES = st.sampled_from(["cat", "dog", "", " ", "cat ", "size", "a.jpg", "²"]) | st.text(max_size=4)


@st.composite
def jsonl_texts(draw) -> bytes:
    """Plausible JSON lines: records whose every field may be missing, null or of a wrong type."""
    lines = []
    for _ in range(draw(st.integers(0, 5))):
        kind = draw(st.sampled_from(["record", "record", "record", "value", "raw"]))
        if kind == "raw":
            lines.append(
                draw(st.sampled_from(["", "{", "[" * 3000, '{"path": ' + BIG_DIGITS + "}", "nul\x00"]))
            )
            continue
        if kind == "value":
            lines.append(json.dumps(draw(JSON_VALUES)))
            continue
        record = draw(
            st.fixed_dictionaries(
                {},
                optional={
                    "path": st.sampled_from(CELLS) | JSON_VALUES,
                    "labels": st.lists(NAMES, max_size=3) | JSON_VALUES,
                    "unknown": st.lists(NAMES, max_size=3) | JSON_VALUES,
                    "attributes": st.dictionaries(NAMES, NAMES | JSON_SCALARS, max_size=3) | JSON_VALUES,
                },
            )
        )
        lines.append(json.dumps(record, ensure_ascii=draw(st.booleans())))
    return _encode(draw, "\n".join(lines) + draw(st.sampled_from(["", "\n", "\r\n"])))


OPTIONS = [  # options of load_data, most of them for CSV
    {}, {}, {"tag_separator": ","}, {"path_column": "image"}, {"tags_column": "labels"},
    {"images_root": "/nowhere"},
]  # fmt: skip


@fuzz(1500)
@given(
    data=csv_texts() | jsonl_texts() | mutated(CSV_SEEDS + JSONL_SEEDS, TOKENS),
    name=st.sampled_from(["d.csv", "d.tsv", "d.txt", "d.jsonl", "d.ndjson", "d.json"]),
    format=st.sampled_from([None, None, "csv-tags", "csv-multihot", "jsonl"]),
    schema=st.sampled_from([None, None, FUZZ_SCHEMA]),
    options=st.sampled_from(OPTIONS),
)
def test_fuzz_text_sources_read_or_name_the_file(data, name, format, schema, options):
    """Generated and mutated CSV and JSON lines, read by ``load_data`` or a given reader, schema or not."""
    note(f"{name}: {data!r}")  # the file's bytes: some Hypothesis installs print blank arguments
    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / name
        f.write_bytes(data)
        png(Path(tmp) / "b.png")
        if format is None:
            read_or_error(lambda: load_data(f, schema=schema, **options), f)
        else:
            read_or_error(lambda: load_source(f, format=format, schema=schema, **options), f)


# Regressions that the fuzzing found: each raised something other than an MlicError, or read nonsense.
def test_odd_attribute_classes_sort_in_a_total_order(tmp_path):
    """A superscript digit and a 5,000-digit run crashed the natural sort; NaN made it hash-dependent."""
    f = write(tmp_path / "m.csv", f"path,size\na.jpg,²\nb.jpg,x{BIG_DIGITS}\nc.jpg,nan\nd.jpg,3\n")
    m = read_multihot_csv(f)
    assert m.schema.attribute("size").classes == ("3", "nan", "²", "x" + BIG_DIGITS)


@pytest.mark.parametrize("reader", [read_tags_csv, read_multihot_csv])
def test_csv_with_a_header_only_is_an_error_not_an_empty_manifest(tmp_path, reader):
    f = write(tmp_path / "h.csv", "path,tags,cat\n")
    assert error_of(reader, f, schema=FUZZ_SCHEMA) == f"{f}: no rows below the header"


@pytest.mark.parametrize("cell", ["a\\u0000b.jpg", "\\ud800.jpg", "dir\\u0000/x"])
def test_image_paths_the_os_cannot_take_are_refused_at_their_line(tmp_path, cell):
    """A NUL or a lone surrogate in a path raised ValueError in os.listdir, or wherever the path was read."""
    f = write(tmp_path / "p.jsonl", f'{{"path": "ok.jpg"}}\n{{"path": "{cell}"}}\n')
    message = error_of(read_jsonl, f)
    assert message.startswith(f"{f}:2: field 'path': not a file path")
    g = write(tmp_path / "p.csv", "path,tags\na\x00b,cat\n")
    assert error_of(read_tags_csv, g).startswith(f"{g}:2: field 'path': not a file path")

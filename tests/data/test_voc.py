"""Tests of mlic.data.formats.voc: difficult objects, image sets, layouts, malformed XML, fuzzing."""

from __future__ import annotations

import html
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpers import error_of, fuzz, mutated, read_or_error, voc, voc_xml, write
from mlic.data.formats import load_data, load_source
from mlic.data.formats.voc import read_voc
from mlic.schema import LabelSchema


# -- Pascal VOC -------------------------------------------------------------------
def test_voc_difficult_only_objects_make_the_label_unknown(tmp_path):
    root = voc(tmp_path / "VOC2012")
    m = read_voc(root)
    assert m.schema == LabelSchema(("cat", "dog", "person"))
    np.testing.assert_array_equal(m.labels, [[0, 1, -1], [1, 0, 0], [0, 0, 0]])
    assert m.paths == [str(root / "JPEGImages" / n) for n in ("a.jpg", "b.png", "c.jpg")]
    assert m.meta["format"] == "voc" and m.missing_files() == []


def test_voc_image_sets_restrict_and_order_the_images(tmp_path):
    root = voc(tmp_path / "VOC2012")
    m = read_voc(root / "ImageSets" / "Main" / "train.txt")
    assert [Path(p).stem for p in m.paths] == ["b", "c"]
    assert m.schema.labels == ("cat",) and m.meta["image_set"].endswith("train.txt")
    m = load_source(root / "ImageSets" / "Main" / "dog_train.txt")
    assert [Path(p).stem for p in m.paths] == ["a", "c"] and m.meta["format"] == "voc"


def test_voc_devkit_folder_and_images_root(tmp_path):
    root = voc(tmp_path / "VOCdevkit" / "VOC2012")
    assert read_voc(tmp_path / "VOCdevkit").paths == read_voc(root).paths
    m = read_voc(root, images_root=tmp_path / "elsewhere")
    assert m.paths[0] == str(tmp_path / "elsewhere" / "a.jpg")
    voc(tmp_path / "VOCdevkit" / "VOC2007")
    assert "holds several" in error_of(read_voc, tmp_path / "VOCdevkit")


def test_voc_with_a_schema_drops_unknown_classes_with_one_warning(tmp_path):
    root = voc(tmp_path / "VOC")
    with pytest.warns(UserWarning, match="'person'") as record:
        m = read_voc(root, schema=LabelSchema(("dog", "horse")))
    assert len(record) == 1 and sorted(m.meta["dropped"]) == ["cat", "person"]
    np.testing.assert_array_equal(m.labels, [[1, 0], [0, 0], [0, 0]])


@pytest.mark.parametrize(
    ("text", "where", "words"),
    [
        ("<annotation><object><name>dog</name></object>", "a.xml:1", "malformed XML"),
        ("<annotation>\n<object><difficult>1</difficult></object></annotation>", "a.xml", "object[0].name"),
        (voc_xml([("dog", "maybe")]), "a.xml", "object[0].difficult"),  # type: ignore[list-item]
        ("<labels/>", "a.xml", "<annotation> root"),
    ],
)
def test_voc_malformed_annotations_name_the_file(tmp_path, text, where, words):
    root = voc(tmp_path / "VOC")
    write(root / "Annotations" / "a.xml", text)
    message = error_of(read_voc, root)
    assert message.startswith(str(root / "Annotations" / where)) and words in message


def test_voc_layout_errors(tmp_path):
    root = voc(tmp_path / "VOC")
    listing = write(root / "ImageSets" / "Main" / "val.txt", "a\nzz\n")
    message = error_of(read_voc, listing)
    assert message.startswith(f"{listing}:2:") and "'zz'" in message
    assert "not a VOC root" in error_of(read_voc, tmp_path / "VOC" / "JPEGImages")
    outside = write(tmp_path / "ids.txt", "a\n")
    assert "below a VOC root" in error_of(read_voc, outside)


BIG_DIGITS = "9" * 5000  # more digits than int() converts by default


TOKENS = [
    b",", b'"', b"\n", b"\x00", b"\xff", b"\xef\xbb\xbf", b"[", b"]", b"{", b"}", b":", b"null", b"NaN",
    b"-Infinity", b"1e999", BIG_DIGITS.encode(), b"true", b"<", b">", b"</", b"&", b"&amp;", b"&e;",
    b"<![CDATA[", b"]]>", b"<!--", b"[" * 3000, b"<a>" * 300,
]  # fmt: skip


SECRET = "s3cr3t-from-outside"


XML_TEXT = st.sampled_from(
    ["dog", " cat ", "", "&amp;", "&lt;b&gt;", "&e;", "&#0;", "&#x1F600;", "<![CDATA[x<y]]>", "<b>x</b>", "&"]
) | st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=4).map(html.escape)


DOCTYPES = [
    "",
    '<!DOCTYPE annotation [<!ENTITY e "dog">]>',
    '<!DOCTYPE annotation [<!ENTITY e SYSTEM "file://{secret}">]>',
    '<!DOCTYPE annotation [<!ENTITY % p SYSTEM "file://{secret}"> %p;]>',
    '<!DOCTYPE annotation SYSTEM "file://{secret}">',
    "<!DOCTYPE annotation [<!ENTITY a0 'ha'>"
    + "".join(f"<!ENTITY a{i} '{f'&a{i - 1};' * 10}'>" for i in range(1, 10))
    + "<!ENTITY e '&a9;'>]>",  # a billion laughs
    '<!DOCTYPE annotation [<!ENTITY e "' + "x" * 50_000 + '">]>',  # quadratic blow-up, with &e; many times
]


ODD_ENCODINGS = ["bogus", "base64", "utf-7", "idna", "punycode", "undefined", "big5", "cp037"]


@st.composite
def voc_xml_texts(draw, secret: Path) -> bytes:
    """A VOC annotation: odd roots, names, difficult flags, entities (internal, external, explosive)."""
    parts = []
    for _ in range(draw(st.integers(0, 3))):
        name = "" if draw(st.integers(0, 5)) == 0 else f"<name>{draw(XML_TEXT)}</name>"
        flag = draw(st.sampled_from(["0", "1", " 1 ", "True", "2", "-1", "maybe", "", "<x/>", "&e;"]))
        difficult = "" if draw(st.booleans()) else f"<difficult>{flag}</difficult>"
        parts.append(f"<object>{name}{difficult}<part><name>hand</name></part></object>")
    if draw(st.booleans()):
        parts.insert(0, f"<filename>{draw(XML_TEXT)}</filename>")
    if draw(st.integers(0, 3)) == 0:
        parts.append("<object><name>&e;</name></object>" * draw(st.sampled_from([1, 200])))
    root = draw(st.sampled_from(["annotation", "annotation", "labels", "a:annotation xmlns:a='urn:x'"]))
    doctype = draw(st.sampled_from(DOCTYPES)).format(secret=secret)
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-16", "latin-1"]))
    declared = draw(st.sampled_from(["", encoding, "utf-8", *ODD_ENCODINGS]))
    prolog = f'<?xml version="1.0" encoding="{declared}"?>' if declared else ""
    text = f"{prolog}{doctype}<{root}>{''.join(parts)}</{root.split()[0]}>"
    data = text.encode(encoding, "replace")
    return draw(mutated([data], TOKENS)) if draw(st.integers(0, 4)) == 0 else data


IDS_LINES = st.lists(
    st.sampled_from(["a", "b", "a 1", "b  -1", "zz", "", " ", "../Annotations/a", "x" * 300, "a\x00"]),
    max_size=4,
)


@fuzz(800)
@given(
    data=st.data(), n_files=st.integers(1, 2), use_list=st.booleans(), how=st.sampled_from(["load", "read"])
)
def test_fuzz_voc_reads_or_names_the_file_and_resolves_no_entity(data, n_files, use_list, how):
    """Generated VOC roots: entities never resolve outside the file, and never explode (expat refuses)."""
    with tempfile.TemporaryDirectory() as tmp:
        secret = write(Path(tmp) / "secret.txt", f"<name>{SECRET}</name>")
        root = Path(tmp) / "VOC"
        (root / "JPEGImages").mkdir(parents=True)
        (root / "Annotations").mkdir()
        for stem in "ab"[:n_files]:
            (root / "Annotations" / f"{stem}.xml").write_bytes(data.draw(voc_xml_texts(secret), label=stem))
        target = root
        if use_list:
            lines = data.draw(IDS_LINES, label="image set")
            target = write(root / "ImageSets" / "Main" / "train.txt", "\n".join(lines))
        call = (lambda: load_data(target)) if how == "load" else (lambda: read_voc(target))
        m = read_or_error(call, root)  # the list, or the annotation file that it names
        if m is not None:
            assert not any(SECRET in name for name in m.schema.labels + tuple(m.paths))


@pytest.mark.parametrize("encoding", ["bogus", "base64", "utf-7", "idna"])
def test_voc_xml_declaring_an_encoding_python_cannot_use_is_malformed(tmp_path, encoding):
    """LookupError, ValueError or UnicodeError escaped from the XML parser."""
    root = voc(tmp_path / "VOC")
    xml = write(root / "Annotations" / "a.xml", f'<?xml version="1.0" encoding="{encoding}"?><annotation/>')
    assert error_of(read_voc, root).startswith(f"{xml}: malformed XML: cannot decode the declared encoding")


def test_voc_entities_never_explode_nor_read_other_files(tmp_path):
    """Internal entities resolve; external ones are refused (expat fetches nothing), and so is a billion
    laughs (expat's amplification limit). Not a regression: the guarantee the fuzzing checks, spelled out."""
    root = voc(tmp_path / "VOC")
    xml = write(
        root / "Annotations" / "a.xml",
        f"{DOCTYPES[1]}<annotation><object><name>&e;</name></object></annotation>",
    )
    assert read_voc(root).schema.labels == ("cat", "dog")
    secret = write(tmp_path / "secret.txt", SECRET)
    for doctype in DOCTYPES[2:6]:  # external entities (general, parameter, DTD) and a billion laughs
        write(
            xml, f"{doctype.format(secret=secret)}<annotation><object><name>&e;</name></object></annotation>"
        )
        message = error_of(read_voc, root)
        assert message.startswith(f"{xml}:1: malformed XML") and SECRET not in message

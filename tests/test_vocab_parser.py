"""The one vocabulary parser (runtime.vocab.parse_vocabulary), shared by export and runtime."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from runtime.class_names import BUILTIN, CAMVID, VOC
from runtime.errors import VocabularyError
from runtime.vocab import parse_vocabulary


@pytest.mark.parametrize("spec", ["voc", "VOC", " Voc "])
def test_builtin_name_is_case_insensitive(spec):
    assert parse_vocabulary(spec) == VOC and len(VOC) == 20


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_every_builtin_list(name):
    assert parse_vocabulary(name) == BUILTIN[name]


@pytest.mark.parametrize(
    "spec,want",
    [
        ("camvidd", "camvid"),
        ("vocc", "voc"),
        ("coco-stuff", "coco_stuff"),
        ("Cityscape", "cityscapes"),
    ],
)
def test_near_miss_of_a_list_name_is_refused(spec, want):
    message = f"unknown vocabulary '{spec}': did you mean {want}\\?"
    with pytest.raises(VocabularyError, match=message):
        parse_vocabulary(spec)


@pytest.mark.parametrize("name", ["person", "road", "traffic cone", "sky"])
def test_single_class_name_is_a_one_class_vocabulary(name):
    assert parse_vocabulary(name) == (name,)


def test_no_builtin_class_name_is_taken_for_a_misspelt_list():
    for names in BUILTIN.values():
        for name in names:
            assert parse_vocabulary(name) == (name,)


def test_comma_list():
    assert parse_vocabulary(" road, car ,person") == ("road", "car", "person")


def test_long_comma_list_never_hits_the_file_system(monkeypatch):
    names = [f"class number {i:02d}" for i in range(40)]
    spec = ",".join(names)
    assert len(spec.encode()) > 255
    looked_up, is_file = [], Path.is_file
    monkeypatch.setattr(Path, "is_file", lambda self: looked_up.append(self) or is_file(self))
    assert parse_vocabulary(spec) == tuple(names)
    assert parse_vocabulary("x" * 300) == ("x" * 300,)  # one long name, no comma
    assert looked_up == []


def test_file_system_errors_are_not_a_crash(monkeypatch):
    def too_long(self):
        raise OSError(errno.ENAMETOOLONG, "File name too long")

    monkeypatch.setattr(Path, "is_file", too_long)
    assert parse_vocabulary("road,car") == ("road", "car")
    assert parse_vocabulary("a\0b") == ("a\0b",)


def test_file_with_bom_crlf_comments_and_blanks(tmp_path):
    f = tmp_path / "classes.txt"
    f.write_bytes("\ufeff# my classes\r\nroad\r\n\r\n  fire hydrant \r\ncafé\r\n".encode("utf-8"))
    assert parse_vocabulary(str(f)) == ("road", "fire hydrant", "café")


def test_file_without_txt_suffix_and_named_like_a_list(tmp_path, monkeypatch):
    (tmp_path / "voc").write_text("cat\ndog\n")
    monkeypatch.chdir(tmp_path)
    assert parse_vocabulary("voc") == ("cat", "dog")  # an existing file wins, as before


def test_invalid_utf8_file(tmp_path):
    f = tmp_path / "latin1.txt"
    f.write_bytes("road\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(VocabularyError, match="not valid UTF-8"):
        parse_vocabulary(str(f))


@pytest.mark.parametrize(
    "spec,match",
    [
        ("", "empty"),
        ("   ", "empty"),
        ("car,,road", "empty entry"),
        ("car,", "empty entry"),
        ("car,Car", "duplicate"),
        ("missing.txt", "does not exist"),
    ],
)
def test_bad_specs(spec, match):
    with pytest.raises(VocabularyError, match=match):
        parse_vocabulary(spec)


def test_empty_and_duplicate_files(tmp_path):
    empty, dupes = tmp_path / "empty.txt", tmp_path / "dupes.txt"
    empty.write_text("# nothing\n\n")
    dupes.write_text("car\nCar \n")
    with pytest.raises(VocabularyError, match="empty"):
        parse_vocabulary(str(empty))
    with pytest.raises(VocabularyError, match="duplicate"):
        parse_vocabulary(str(dupes))


def test_not_a_string():
    with pytest.raises(VocabularyError, match="must be a string"):
        parse_vocabulary(["car", "road"])


def test_training_resolve_classes_is_the_same_parser():
    from training.class_names import CAMVID as training_camvid
    from training.vocab import resolve_classes

    assert training_camvid is CAMVID
    assert resolve_classes("voc") == VOC and resolve_classes("road,car") == ("road", "car")
    with pytest.raises(VocabularyError, match="did you mean camvid"):
        resolve_classes("camvidd")


def test_existing_folder_is_refused_not_taken_as_a_class_name(tmp_path):
    (tmp_path / "classes").mkdir()
    with pytest.raises(VocabularyError, match="is a folder"):
        parse_vocabulary(str(tmp_path / "classes"))


def test_a_list_name_wins_over_a_folder_of_that_name(tmp_path, monkeypatch):
    (tmp_path / "voc").mkdir()
    monkeypatch.chdir(tmp_path)
    assert parse_vocabulary("voc") == VOC

"""Corpus sources: built-in Shakespeare, local files and directories, the Hugging Face path on local data."""

import json

import pytest

from hymba.data import builtin_text, load_corpus, plays_to_text

PLAY = """# A Play

## ACT I

### SCENE I. A room.

_Enter ANNE and
BOB_

**ANNE**  
Good morrow, Bob.  
How now?

_Exit BOB_

Alone at last.

**FIRST LORD**  
[Aside]_  
No, no; he'll _\\[ ]_  
Twice being _[by the people chosen]_  
*Exeunt.*
"""


def test_plays_to_text_matches_tiny_shakespeare_layout():
    expected = (
        "ANNE:\nGood morrow, Bob.\nHow now?\nAlone at last.\n\n"
        "FIRST LORD:\nNo, no; he'll\nTwice being by the people chosen\n"
    )
    assert plays_to_text(PLAY) == expected


def test_builtin_corpus_is_speech_only():
    text = builtin_text()
    assert 4_000_000 < len(text) < 6_000_000
    assert text.startswith("THESEUS:\nNow, fair Hippolyta, our nuptial hour\n")
    assert "\nHAMLET:\nTo be, or not to be" in text
    for markup in ("**", "_Enter", "\n#", "\\["):
        assert markup not in text
    assert load_corpus(None, char_budget=1000) == text[:1000] == load_corpus("builtin", char_budget=1000)


def test_local_file_and_directory(tmp_path):
    (tmp_path / "b.txt").write_text("second")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.txt").write_text("third")
    (tmp_path / "a.txt").write_text("first")
    (tmp_path / "skip.md").write_text("not text")
    assert load_corpus(str(tmp_path / "a.txt")) == "first"
    assert load_corpus(str(tmp_path)) == "first\n\nsecond\n\nthird"  # sorted paths: a, b, sub/a
    assert load_corpus(str(tmp_path), char_budget=8) == "first\n\ns"


def test_missing_corpus_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="corpus not found: .*nope.txt"):
        load_corpus(str(tmp_path / "nope.txt"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no .txt files"):
        load_corpus(str(tmp_path / "empty"))


def _jsonl(tmp_path, rows):
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.mark.parametrize("streaming", [False, True], ids=["map", "streaming"])
def test_hub_path_detects_text_column(tmp_path, streaming):
    files = _jsonl(tmp_path, [{"id": i, "content": f"doc {i}"} for i in range(5)])
    assert load_corpus("json", data_files=files, streaming=streaming) == "\n\n".join(f"doc {i}" for i in range(5))
    # the budget stops reading rows early, then truncates
    assert load_corpus("json", data_files=files, streaming=streaming, char_budget=9) == "doc 0\n\ndo"


def test_hub_path_text_builder(tmp_path):
    (tmp_path / "t.txt").write_text("line one\nline two\n")
    assert load_corpus("text", data_files=str(tmp_path / "t.txt")) == "line one\n\nline two"


def test_hub_path_unknown_text_column_lists_columns(tmp_path):
    files = _jsonl(tmp_path, [{"title": "a", "body": "b", "n": 1}])
    with pytest.raises(
        ValueError, match=r"cannot tell the text column.*title \(string\), body \(string\), n \(int64\)"
    ):
        load_corpus("json", data_files=files)
    with pytest.raises(ValueError, match=r"no column 'text'; its columns are: title"):
        load_corpus("json", data_files=files, text_column="text")
    assert load_corpus("json", data_files=files, text_column="body") == "b"


def test_json_lines_corpus_takes_the_text_field(tmp_path):
    rows = [{"id": i, "text": f"story {i}\nline two"} for i in range(4)]
    expected = "\n\n".join(r["text"] for r in rows)
    assert load_corpus(_jsonl(tmp_path, rows)) == expected  # .jsonl
    plain = tmp_path / "rows.txt"  # not named .jsonl, but every line is a JSON object
    plain.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert load_corpus(str(plain)) == expected
    # the field is detected as for a Hugging Face dataset, or given
    other = [{"id": 1, "content": "a"}, {"id": 2, "content": "b"}]
    assert load_corpus(_jsonl(tmp_path, other)) == "a\n\nb"
    assert load_corpus(_jsonl(tmp_path, [{"title": "t", "body": "b"}]), text_column="body") == "b"


def test_json_lines_corpus_without_a_text_field_names_the_fields(tmp_path):
    path = _jsonl(tmp_path, [{"title": "a", "body": "b", "n": 1}])
    with pytest.raises(
        ValueError,
        match=r"cannot tell the text column of JSON-lines corpus .*rows.jsonl; its "
        r"columns are: title \(string\), body \(string\), n \(int\)",
    ):
        load_corpus(path)


def test_non_utf8_corpus_file_is_named(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.txt").write_text("fine\n")
    (tmp_path / "d" / "b.txt").write_bytes(b"caf\xe9\n")
    for source in (tmp_path / "d" / "b.txt", tmp_path / "d"):
        with pytest.raises(ValueError, match=r"corpus file .*b.txt is not UTF-8 text \(byte 0xe9 at offset 3\)"):
            load_corpus(str(source))

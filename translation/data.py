"""Raw parallel text from the local files of each supported corpus, and checks on binarized fairseq data.

Readers return aligned ``(sources, targets)`` lists per split; a missing file raises :class:`PSKDError` with the way
to get the corpus (none of them can be downloaded on machines without general internet access).

Layouts:

* ``plain``: ``<raw_dir>/<name>.<lang>`` (optionally ``.gz``), one sentence per line, line i of both files aligned.
  The Ding mini set (``scripts/fetch_data.py --only ding-de-en``) and Multi30k (``train``, ``val``,
  ``test_2016_flickr`` from the multi30k-dataset repository's ``data/task1/raw``) use it.
* ``iwslt``: the IWSLT'15 release folder (``en-de.tgz`` from https://wit3.fbk.eu/2015-01 unpacked):
  ``train.tags.en-de.{en,de}`` (TED talk transcripts with XML-ish metadata lines) and
  ``IWSLT15.TED.<set>.en-de.{en,de}.xml`` for the dev/test sets (``<seg id="..."> sentence </seg>`` lines).
"""
from __future__ import annotations

import gzip
import hashlib
import re
from pathlib import Path

import numpy as np

from .errors import PSKDError

__all__ = ["read_split", "read_lines", "check_binarized", "dict_size", "file_sha1"]

_SEG = re.compile(r"<seg[^>]*>(.*)</seg>", re.S)
# train.tags metadata lines: dropped, except the talk's title and description, kept as text (as fairseq's
# prepare-iwslt14.sh does).
_DROP_TAGS = ("<url", "<talkid", "<keywords", "<speaker", "<reviewer", "<translator", "<doc", "</doc", "<?xml",
              "<mteval", "</mteval", "<srcset", "</srcset", "<refset", "</refset")
_KEEP_TAGS = re.compile(r"</?(title|description)>")


def read_lines(path: Path) -> list[str]:
    """Lines of a UTF-8 text file (``.gz`` read transparently), without their newline."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [line.rstrip("\n").rstrip("\r") for line in f]


def _find(raw_dir: Path, names: list[str], how_to_get: str, corpus: str) -> Path:
    for name in names:
        for candidate in (raw_dir / name, raw_dir / (name + ".gz")):
            if candidate.is_file():
                return candidate
    raise PSKDError(f"{corpus}: {raw_dir / names[0]} not found; {how_to_get}")


def _read_plain(raw_dir: Path, name: str, lang: str, how_to_get: str, corpus: str) -> list[str]:
    return read_lines(_find(raw_dir, [f"{name}.{lang}"], how_to_get, corpus))


def _read_iwslt(raw_dir: Path, name: str, lang: str, pair: str, how_to_get: str, corpus: str) -> list[str]:
    if name == "train":
        lines = read_lines(_find(raw_dir, [f"train.tags.{pair}.{lang}"], how_to_get, corpus))
        out = []
        for line in lines:
            stripped = line.strip()
            if stripped.startswith(_DROP_TAGS):
                continue
            out.append(_KEEP_TAGS.sub("", stripped).strip())
        return out
    candidates = [f"IWSLT15.TED.{name}.{pair}.{lang}.xml", f"IWSLT15.TEDX.{name}.{pair}.{lang}.xml"]
    path = _find(raw_dir, candidates, how_to_get, corpus)
    return [m.group(1).strip() for m in map(_SEG.search, read_lines(path)) if m]


def read_split(fmt: str, raw_dir: str | Path, names: str | list[str], src: str, tgt: str, *, pair: str = "",
               how_to_get: str = "", corpus: str = "corpus") -> tuple[list[str], list[str]]:
    """Aligned source and target sentences of one split (several file names are concatenated).

    Args:
        fmt: ``plain`` or ``iwslt``.
        raw_dir: folder holding the corpus files.
        names: file stem(s) of the split (``train``, ``valid``, ``tst2013``, ...).
        src, tgt: language codes (file suffixes).
        pair: IWSLT language pair as in the file names (``en-de`` for both directions).
        how_to_get: appended to the error when a file is missing.
        corpus: corpus name for messages.

    Raises:
        PSKDError: a missing file, or source and target files of different lengths.
    """
    raw_dir = Path(raw_dir)
    if not raw_dir.is_dir():
        raise PSKDError(f"{corpus}: folder {raw_dir} not found; {how_to_get}")
    srcs, tgts = [], []
    for name in [names] if isinstance(names, str) else list(names):
        if fmt == "plain":
            a, b = (_read_plain(raw_dir, name, lang, how_to_get, corpus) for lang in (src, tgt))
        elif fmt == "iwslt":
            a, b = (_read_iwslt(raw_dir, name, lang, pair or f"{src}-{tgt}", how_to_get, corpus)
                    for lang in (src, tgt))
        else:
            raise PSKDError(f"unknown raw data format {fmt!r} (plain or iwslt)")
        if len(a) != len(b):
            raise PSKDError(f"{corpus}: split '{name}' has {len(a)} {src} lines but {len(b)} {tgt} lines")
        srcs += a
        tgts += b
    return srcs, tgts


def file_sha1(path: str | Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def dict_size(path: str | Path) -> int:
    """Entries of a fairseq dictionary file plus its 4 built-in symbols (bos, pad, eos, unk)."""
    with open(path, encoding="utf-8") as f:
        return 4 + sum(1 for line in f if line.strip())


# fairseq MMapIndexedDataset (.idx header: magic, version, dtype code)
_MMAP_MAGIC = b"MMIDIDX\x00\x00"
_MMAP_DTYPES = {1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64, 6: np.float64, 7: np.double,
                8: np.uint16}


def _max_token(prefix: Path) -> int:
    idx, bin_ = prefix.with_suffix(prefix.suffix + ".idx"), prefix.with_suffix(prefix.suffix + ".bin")
    with open(idx, "rb") as f:
        if f.read(9) != _MMAP_MAGIC:
            raise PSKDError(f"{idx} is not a fairseq mmap index (binarized with another --dataset-impl?)")
        f.read(8)
        dtype = _MMAP_DTYPES[int.from_bytes(f.read(1), "little")]
    data = np.memmap(bin_, dtype=dtype, mode="r")
    return int(data.max()) if data.size else -1


def check_binarized(data_dir: str | Path, src: str, tgt: str, splits: tuple[str, ...] = ("train",)) -> None:
    """Check that a fairseq-preprocess folder is complete and that its dictionaries fit its token ids.

    Also compares the dictionaries with the hashes ``pskd-mt prepare`` recorded, which catches a replaced dictionary
    of the same size.

    Raises:
        PSKDError: on a missing file, a token id beyond a dictionary, or a dictionary changed since prepare.
    """
    import json

    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise PSKDError(f"data folder {data_dir} not found; make it with `pskd-mt prepare`")
    meta_path = data_dir / "pskd_data.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    for lang in (src, tgt):
        d = data_dir / f"dict.{lang}.txt"
        if not d.is_file():
            raise PSKDError(f"{d} not found; is {data_dir} a fairseq-preprocess output for {src}->{tgt}?")
        want = meta.get("dict_sha1", {}).get(lang)
        if want and want != file_sha1(d):
            raise PSKDError(f"dictionary {d} does not match the data it was prepared with (changed since "
                            "pskd-mt prepare); re-run pskd-mt prepare")
        size = dict_size(d)
        for split in splits:
            prefix = data_dir / f"{split}.{src}-{tgt}.{lang}"
            if not prefix.with_suffix(prefix.suffix + ".bin").is_file():
                raise PSKDError(f"{prefix}.bin not found; is {data_dir} a fairseq-preprocess output for "
                                f"{src}->{tgt} with a '{split}' split?")
            top = _max_token(prefix)
            if top >= size:
                raise PSKDError(f"{prefix}.bin holds token id {top} but {d} has only {size} entries: the dictionary "
                                "does not match the data")

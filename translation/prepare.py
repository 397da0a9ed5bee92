"""``pskd-mt prepare``: raw parallel text -> sentencepiece pieces -> fairseq-preprocess binaries (joined dictionary).

Output folder::

    dict.<src>.txt, dict.<tgt>.txt, {train,valid,test}.<src>-<tgt>.<lang>.{bin,idx}   fairseq-preprocess output
    spm.model, spm.vocab        the joined sentencepiece model trained on the training split
    raw/{valid,test}.<lang>     untokenised sentences: the references pskd-mt eval scores against
    pskd_data.json              recipe, languages, counts, dictionary hashes (checked by train and eval)

Everything is built in a sibling temporary folder and renamed into place at the end, so a failed or interrupted run
leaves no half-made folder and never touches an existing one (unless ``--overwrite``, which replaces it only once
the new one is complete).
"""
from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from .data import file_sha1, read_split
from .errors import PSKDError

__all__ = ["prepare"]

SPLITS = ("train", "valid", "test")
REPO_ROOT = Path(__file__).resolve().parents[1]


def _train_spm(sentences: list[str], prefix: Path, cfg: dict[str, Any], threads: int) -> None:
    import sentencepiece as spm

    text = prefix.parent / "spm_train.txt"
    text.write_text("".join(s + "\n" for s in sentences if s.strip()), encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(text), model_prefix=str(prefix), vocab_size=int(cfg.get("vocab_size", 8000)),
        model_type=cfg.get("model_type", "unigram"), character_coverage=float(cfg.get("character_coverage", 1.0)),
        # A small corpus may not support the requested size: take what it supports instead of failing.
        hard_vocab_limit=False,
        # fairseq adds its own <s> </s> <pad>; sentencepiece only needs <unk>.
        bos_id=-1, eos_id=-1, pad_id=-1, unk_id=0,
        input_sentence_size=int(cfg.get("input_sentence_size", 2_000_000)), shuffle_input_sentence=True,
        num_threads=threads, minloglevel=2,
    )
    text.unlink()


def _encode(model: Path, lines: list[str], out: Path) -> None:
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(model))
    pieces = sp.encode(lines, out_type=str)
    out.write_text("".join(" ".join(p) + "\n" for p in pieces), encoding="utf-8")


def prepare(recipe: dict[str, Any], dest: str | Path, *, raw_dir: str | None = None, src: str | None = None,
            tgt: str | None = None, limit_train: int | None = None, vocab_size: int | None = None,
            overwrite: bool = False, workers: int = 1, seed: int = 0) -> dict[str, Any]:
    """Build a fairseq data folder for a recipe; returns the metadata written to ``pskd_data.json``.

    Args:
        recipe: a loaded recipe (:func:`pskd.translation.recipes.load_recipe`).
        dest: output folder (must not exist unless ``overwrite``).
        raw_dir: corpus folder (default: the recipe's ``data.raw_dir``).
        src, tgt: translation direction (default: the recipe's).
        limit_train: keep a random subset of this many training pairs (fixed by ``seed``); default: the recipe's
            ``data.limit_train`` (none: all pairs).
        vocab_size: override the recipe's sentencepiece vocabulary size.
        overwrite: replace an existing ``dest``.
        workers: fairseq-preprocess workers and sentencepiece threads.
    """
    data = recipe["data"]
    src, tgt = src or data.get("src"), tgt or data.get("tgt")
    raw_dir = raw_dir or data.get("raw_dir")
    if not src or not tgt:
        raise PSKDError(f"recipe {recipe['name']} names no languages; pass --src and --tgt")
    if not raw_dir:
        raise PSKDError(f"recipe {recipe['name']} needs --raw-dir (where the corpus files are); "
                        f"{data.get('how_to_get', '')}".rstrip("; "))
    if not Path(raw_dir).is_absolute() and not Path(raw_dir).exists() and (REPO_ROOT / raw_dir).exists():
        raw_dir = str(REPO_ROOT / raw_dir)  # the recipe's relative default, run from outside the checkout
    dest = Path(dest)
    if dest.exists() and not overwrite:
        raise PSKDError(f"{dest} already exists; pass --overwrite to replace it or choose another --dest")
    splits = data.get("splits") or {s: s for s in SPLITS}
    corpus = {}
    for split in SPLITS:  # read (and so check) every file before creating anything
        if split not in splits:
            raise PSKDError(f"recipe {recipe['name']} defines no '{split}' split")
        corpus[split] = read_split(data.get("format", "plain"), raw_dir, splits[split], src, tgt,
                                   pair=data.get("pair", ""), how_to_get=data.get("how_to_get", ""),
                                   corpus=recipe["name"])
        if not corpus[split][0]:
            raise PSKDError(f"{recipe['name']}: split '{split}' is empty")
    limit_train = limit_train if limit_train is not None else data.get("limit_train")
    if limit_train:
        keep = sorted(random.Random(seed).sample(range(len(corpus["train"][0])),
                                                 min(limit_train, len(corpus["train"][0]))))
        corpus["train"] = tuple([side[i] for i in keep] for side in corpus["train"])

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
    try:
        spm_cfg = dict(recipe.get("sentencepiece") or {})
        if vocab_size:
            spm_cfg["vocab_size"] = vocab_size
        _train_spm(corpus["train"][0] + corpus["train"][1], tmp / "spm", spm_cfg, workers)
        pieces, raw = tmp / "pieces", tmp / "raw"
        pieces.mkdir()
        raw.mkdir()
        for split, (s, t) in corpus.items():
            for lang, lines in ((src, s), (tgt, t)):
                _encode(tmp / "spm.model", lines, pieces / f"{split}.{lang}")
                if split != "train":
                    (raw / f"{split}.{lang}").write_text("".join(x + "\n" for x in lines), encoding="utf-8")
        cmd = [sys.executable, "-m", "fairseq_cli.preprocess", "--source-lang", src, "--target-lang", tgt,
               "--trainpref", str(pieces / "train"), "--validpref", str(pieces / "valid"),
               "--testpref", str(pieces / "test"), "--destdir", str(tmp), "--joined-dictionary",
               "--workers", str(workers)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise PSKDError(f"fairseq-preprocess failed: {last}")
        shutil.rmtree(pieces)
        meta = {
            "recipe": recipe["name"], "raw_dir": str(Path(raw_dir).resolve()), "src": src, "tgt": tgt,
            "counts": {split: len(pair[0]) for split, pair in corpus.items()}, "limit_train": limit_train,
            "seed": seed, "sentencepiece": spm_cfg,
            "dict_sha1": {lang: file_sha1(tmp / f"dict.{lang}.txt") for lang in (src, tgt)},
        }
        (tmp / "pskd_data.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
        if dest.exists():  # --overwrite: swap only now that the new folder is complete
            old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
            dest.rename(old)
            tmp.rename(dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return meta

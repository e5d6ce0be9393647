"""Text -> token shards on disk, streaming, in parallel, cached, atomic.

``prepare`` turns the inputs of a ``DataConfig`` into a dataset directory::

    train.bin train-00001.bin ... val.bin ... token shards (see ``shards.py``)
    tokenizer.json                           the trained tokenizer
    meta.json                                sources (size, mtime, SHA-256, documents), settings,
                                             tokenizer hash, dtype, shard list, the split, notes

Passes over the inputs, each in bounded memory (one block of text per worker in flight):

1. tokenizer training: ``char`` sees every character (it must, or encoding would fail);
   ``word`` and ``bpe`` learn from a sample of at most ``tokenizer_sample_mb`` MB taken evenly
   across the corpus (all of it when the corpus is smaller); ``byte`` learns nothing.
2. encoding: blocks of documents are tokenised by ``workers`` processes (forked; HF's own thread
   pool is switched off inside them), in order, and appended to the split's shard writer.

The split: with several documents, whole documents go to val: ``max(1, round(N * val_fraction))``
of the N documents, drawn by ``numpy.random.Generator(PCG64(split_seed)).choice`` without
replacement; their indices are recorded in meta.json. With one document (a single text file, e.g.
Shakespeare) the split is inside it: the first ``int(n_tokens * (1 - val_fraction))`` tokens train,
the rest (the end of the text) is val. Documents of one split are joined with ``<eos>``.

Caching: meta.json records every source's size and mtime; a re-run with equal settings and equal
stats returns at once; if only mtimes changed, the SHA-256 of the contents decides. Output is
written into a temporary directory and renamed into place.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import sys
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..config import DataConfig
from ..errors import CLLMError
from ..tokenizers import EOS_ID, Tokenizer, load_tokenizer, save_tokenizer, tokenizer_from_json, tokenizer_class
from .shards import ShardWriter, open_shard, token_dtype
from .sources import ReadStats, Source, iter_chunks, resolve_sources

META_VERSION = 2
TASK_CHARS = 1 << 20  # text per encoding task
PARALLEL_MIN_BYTES = 4 << 20  # smaller corpora are encoded in-process (no worker start-up)
# Settings that do not change the prepared tokens (so they are not part of the cache key).
_NOT_IN_KEY = {"data", "workers"}


@dataclass
class PreparedData:
    """A prepared dataset on disk: where it is, its tokenizer and its metadata."""

    dir: Path
    tokenizer: Tokenizer
    meta: dict

    def shards(self, split: str) -> list[np.ndarray]:
        """The split's token shards, each a read-only memmap of shape ``[n_tokens]``."""
        return [open_shard(self.dir / name, self.meta["dtype"], n) for name, n in self.meta["shards"][split]]

    def tokens(self, split: str) -> np.ndarray:
        """The split's tokens as one array: the memmap itself for a one-shard split, otherwise the
        shards concatenated in memory (fine for small data; training uses ``shards``)."""
        shards = self.shards(split)
        if len(shards) == 1:
            return shards[0]
        return np.concatenate(shards) if shards else np.zeros(0, dtype=self.meta["dtype"])

    @property
    def fingerprint(self) -> str:
        """Identifies tokens and tokenizer together: a checkpoint may resume only on equal data."""
        return self.meta["fingerprint"]


def load_prepared(data_dir: str | Path) -> PreparedData:
    """Open a prepared dataset, checking meta.json, the tokenizer and every shard's header and size."""
    data_dir = Path(data_dir)
    meta_path = data_dir / "meta.json"
    if not meta_path.is_file():
        raise CLLMError(f"{data_dir} is not a prepared dataset (no meta.json)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if not isinstance(meta, dict):
            raise TypeError("meta.json is not a JSON object")
        if meta.get("version") != META_VERSION:
            raise CLLMError(f"prepared dataset {data_dir} has format version {meta.get('version')}, this cllm "
                            f"reads version {META_VERSION}; run cllm prepare again")
        tokenizer = load_tokenizer(data_dir / "tokenizer.json")
        if tokenizer.fingerprint() != meta["tokenizer_fingerprint"]:
            raise CLLMError(f"{data_dir / 'tokenizer.json'} does not match meta.json (tokenizer hash differs)")
        data = PreparedData(data_dir, tokenizer, meta)
        for split in ("train", "val"):
            n = sum(len(s) for s in data.shards(split))
            if n != meta[f"{split}_tokens"]:
                raise CLLMError(f"prepared dataset {data_dir}: the {split} shards hold {n} tokens, meta.json says "
                                f"{meta[f'{split}_tokens']}")
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, UnicodeDecodeError) as e:
        raise CLLMError(f"prepared dataset {data_dir} is incomplete or corrupt ({type(e).__name__}: {e})") from None
    return data


def _settings(cfg: DataConfig) -> dict:
    return {k: v for k, v in asdict(cfg).items() if k not in _NOT_IN_KEY}


def _cache_key(settings: dict, sources: list[Source]) -> str:
    return hashlib.sha256(json.dumps([META_VERSION, settings, [s.stat_record() for s in sources]],
                                     sort_keys=True).encode()).hexdigest()


def _content_hashes(sources: list[Source]) -> dict[str, str]:
    out = {}
    for s in sources:
        h = hashlib.sha256()
        with open(s.path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        out[s.name] = h.hexdigest()
    return out


def _cached(out_dir: Path, settings: dict, sources: list[Source], key: str, min_tokens: int) -> PreparedData | None:
    if not (out_dir / "meta.json").is_file():
        return None
    try:
        cached = load_prepared(out_dir)
    except CLLMError:
        return None  # a stale or broken dataset is simply rebuilt
    meta = cached.meta
    if meta.get("cache_key") != key:
        old = meta.get("sources", [])
        same_files = [(r.get("path"), r.get("bytes")) for r in old] == [(s.name, s.size) for s in sources]
        if meta.get("settings") != settings or not same_files:
            return None
        hashes = _content_hashes(sources)  # only the mtimes differ: let the contents decide
        if [r.get("sha256") for r in old] != [hashes[s.name] for s in sources]:
            return None
        for r, s in zip(old, sources):
            r["mtime_ns"] = s.mtime_ns
        meta["cache_key"] = key
        tmp = out_dir / f".meta.json.tmp-{os.getpid()}"
        tmp.write_text(json.dumps(meta, indent=2), encoding="utf-8")
        os.replace(tmp, out_dir / "meta.json")
    _check_split_sizes(meta, min_tokens)
    return cached


def _check_split_sizes(meta: dict, min_tokens: int) -> None:
    for split in ("train", "val"):
        n = meta[f"{split}_tokens"]
        longest = max((c for _, c in meta["shards"][split]), default=0)
        if n < min_tokens:
            raise CLLMError(
                f"the {split} split has {n} tokens, fewer than block_size + 1 = {min_tokens}; "
                "use more text, a smaller --block-size, or a different --val-fraction"
            )
        if longest < min_tokens:
            raise CLLMError(f"no {split} shard holds block_size + 1 = {min_tokens} tokens; use a larger --shard-tokens")


# ---- tokenizer training ----

def _training_texts(cfg: DataConfig, sources: list[Source], total_bytes: int, everything: bool, docs: list[int]):
    """Text chunks to train the tokenizer on: all of them, or an even sample of about
    ``tokenizer_sample_mb`` MB (every chunk whose share of the running budget comes due). Reads the
    whole corpus either way, counting each source's non-empty documents into ``docs``."""
    rate = 1.0 if everything else cfg.tokenizer_sample_mb * 1_000_000 / total_bytes
    credit = 0.0
    for source in sources:
        docs.append(0)
        last = -1
        for slot, chunk in iter_chunks(source, cfg.errors, cfg.text_field, cfg.skip_bad_lines):
            if slot != last:
                docs[-1] += 1
                last = slot
            if rate >= 1.0:
                yield chunk
                continue
            credit += rate * len(chunk)
            if credit >= len(chunk):
                credit -= len(chunk)
                yield chunk


def train_tokenizer(cfg: DataConfig, sources: list[Source]) -> tuple[Tokenizer, dict, list[int]]:
    """The tokenizer, how it was trained (for meta.json), and each source's number of non-empty documents."""
    total = sum(s.size for s in sources)
    kind = cfg.tokenizer
    cls = tokenizer_class(kind)
    seen, docs = [0], []

    def counted(texts):
        for t in texts:
            seen[0] += len(t)
            yield t

    budget = cfg.tokenizer_sample_mb * 1_000_000
    everything = kind == "char" or total <= budget
    texts = _training_texts(cfg, sources, total, everything, docs)
    if kind == "byte":
        for _ in texts:  # nothing to learn; the pass only counts documents
            pass
        tok = cls.train([])
    else:
        tok = cls.train(counted(texts), vocab_size=cfg.tokenizer_vocab_size)
        for _ in texts:  # a tokenizer may stop reading early; finish the document count
            pass
    sample = ("none" if kind == "byte" else "all" if everything
              else f"even sample of about {cfg.tokenizer_sample_mb} MB")
    return tok, {"trained_on_chars": seen[0], "corpus_bytes": total, "sample": sample}, docs


def count_documents(cfg: DataConfig, sources: list[Source]) -> tuple[dict, list[int]]:
    """For a given tokenizer, nothing is trained: one reading pass counts each source's documents."""
    total, docs = sum(s.size for s in sources), []
    for _ in _training_texts(cfg, sources, total, True, docs):
        pass
    return {"trained_on_chars": 0, "corpus_bytes": total, "sample": "given"}, docs


def _release_free_memory() -> None:
    """Return freed heap pages to the OS (glibc ``malloc_trim``); a no-op elsewhere."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


# ---- encoding (in worker processes for large corpora) ----

_WORKER_TOKENIZER: Tokenizer | None = None
_WORKER_DTYPE = "uint16"


def _init_worker(tokenizer_json: str, dtype: str) -> None:
    global _WORKER_TOKENIZER, _WORKER_DTYPE
    _WORKER_TOKENIZER = tokenizer_from_json(tokenizer_json)
    _WORKER_DTYPE = dtype


def _encode_task(texts: list[str]) -> list[np.ndarray]:
    return [ids.astype(_WORKER_DTYPE) for ids in _WORKER_TOKENIZER.encode_batch(texts)]


class _Encoder:
    """Encodes tasks in order, in-process or by a pool of forked workers with bounded tasks in flight."""

    def __init__(self, tokenizer: Tokenizer, dtype: str, workers: int):
        self.workers = workers
        self.pool = None
        self.inflight: deque = deque()
        if workers > 1:
            # Forked workers must not start HF's thread pool (it is not fork-safe, and HF would warn);
            # each worker encodes single-threaded and the processes give the parallelism.
            old = os.environ.get("TOKENIZERS_PARALLELISM")
            os.environ["TOKENIZERS_PARALLELISM"] = "false"
            try:
                ctx = multiprocessing.get_context("fork")
                self.pool = ctx.Pool(workers, _init_worker, (tokenizer.to_json(), dtype))
            finally:
                if old is None:
                    del os.environ["TOKENIZERS_PARALLELISM"]
                else:
                    os.environ["TOKENIZERS_PARALLELISM"] = old
        else:
            _init_worker(tokenizer.to_json(), dtype)

    def submit(self, meta, texts: list[str]):
        """Queue a task; returns the finished ``(meta, ids_list)`` pairs that are ready, in order."""
        if self.pool is None:
            return [(meta, _encode_task(texts))]
        self.inflight.append((meta, self.pool.apply_async(_encode_task, (texts,))))
        done = []
        while len(self.inflight) > 2 * self.workers or (self.inflight and self.inflight[0][1].ready()):
            m, r = self.inflight.popleft()
            done.append((m, r.get()))
        return done

    def drain(self):
        done = []
        while self.inflight:
            m, r = self.inflight.popleft()
            done.append((m, r.get()))
        return done

    def close(self):
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()


class _SplitWriter:
    """A shard writer that puts <eos> between consecutive documents."""

    def __init__(self, writer: ShardWriter):
        self.writer, self.last_doc = writer, None
        self.eos = np.array([EOS_ID])

    def write(self, doc: int, ids: np.ndarray):
        if not len(ids):
            return
        if self.last_doc is not None and doc != self.last_doc:
            self.writer.write(self.eos)
        self.last_doc = doc
        self.writer.write(ids)


def _split_single_document(tmp: Path, shards: list[tuple[str, int]], n_train: int, dtype: str,
                           shard_tokens: int) -> dict[str, list]:
    """Cut the one-document token stream ``all-*.bin`` at token ``n_train`` into train and val shards."""
    train, val = ShardWriter(tmp, "train", dtype, shard_tokens), ShardWriter(tmp, "val", dtype, shard_tokens)
    pos = 0
    for name, n in shards:
        path = tmp / name
        # A shard wholly on one side of the cut is renamed into place; one the cut runs through is copied.
        renamed = (pos + n <= n_train and train.adopt(path, n)) or (pos >= n_train and val.adopt(path, n))
        if not renamed:
            ids = open_shard(path, dtype, n)
            cut = max(0, min(n, n_train - pos))
            for start in range(0, n, 1 << 24):  # copy in slices: bounded memory
                stop = min(n, start + (1 << 24))
                if start < cut:
                    train.write(ids[start : min(stop, cut)])
                if stop > cut:
                    val.write(ids[max(start, cut) : stop])
            del ids
            path.unlink()
        pos += n
    return {"train": train.close(), "val": val.close()}


def prepare(cfg: DataConfig, out_dir: str | Path, min_tokens: int = 2, progress: bool = False,
            tokenizer: Tokenizer | None = None) -> PreparedData:
    """Tokenise ``cfg.data`` into ``out_dir``, or reuse what is there when inputs and settings match.

    ``min_tokens``: each split must hold at least this many tokens (block_size + 1 for training).
    ``progress``: show a progress bar (MB/s of input) on stderr. ``tokenizer``: encode with this one
    (a pretrained model's) instead of training one per ``cfg.tokenizer``.
    """
    out_dir = Path(out_dir)
    sources = resolve_sources(cfg.data, cfg.include, cfg.exclude)
    settings = _settings(cfg)
    if tokenizer is not None:
        settings["given_tokenizer"] = tokenizer.fingerprint()
    key = _cache_key(settings, sources)
    cached = _cached(out_dir, settings, sources, key, min_tokens)
    if cached is not None:
        return cached

    started = time.perf_counter()
    if tokenizer is None:
        tokenizer, training, doc_counts = train_tokenizer(cfg, sources)
    else:
        training, doc_counts = count_documents(cfg, sources)
    training["seconds"] = round(time.perf_counter() - started, 2)
    _release_free_memory()  # before forking workers: they should not inherit the training's freed heap
    dtype = token_dtype(tokenizer.vocab_size)
    n_docs = sum(doc_counts)
    if n_docs == 0:
        raise CLLMError(f"corpus is empty: {', '.join(s.name for s in sources)}")
    single = n_docs == 1
    rng = np.random.Generator(np.random.PCG64(cfg.split_seed))
    if single:
        val_ids = np.zeros(0, dtype=np.int64)
    else:
        k = min(n_docs - 1, max(1, round(n_docs * cfg.val_fraction)))
        val_ids = np.sort(rng.choice(n_docs, size=k, replace=False))
    is_val = np.zeros(n_docs, dtype=bool)
    is_val[val_ids] = True

    total_bytes = sum(s.size for s in sources)
    workers = cfg.workers or os.cpu_count() or 1
    if total_bytes < PARALLEL_MIN_BYTES:
        workers = 1
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    created = [p for p in [tmp.parent, *tmp.parent.parents] if not p.exists()]  # removed again on failure
    tmp.mkdir(parents=True)
    stats = ReadStats()
    encoder = None
    bar = None
    ok = False
    try:
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=total_bytes, unit="B", unit_scale=True, unit_divisor=1000, desc="tokenising",
                       dynamic_ncols=True, file=sys.stderr)
        writers = ({"all": _SplitWriter(ShardWriter(tmp, "all", dtype, cfg.shard_tokens))} if single else
                   {s: _SplitWriter(ShardWriter(tmp, s, dtype, cfg.shard_tokens)) for s in ("train", "val")})
        encoder = _Encoder(tokenizer, dtype, workers)

        def consume(done):
            for (docs, nbytes), id_lists in done:
                for doc, ids in zip(docs, id_lists):
                    writers["all" if single else "val" if is_val[doc] else "train"].write(doc, ids)
                if bar is not None:
                    bar.update(nbytes)

        docs, texts, size, doc = [], [], 0, -1
        for source in sources:
            last = -1
            for slot, chunk in iter_chunks(source, cfg.errors, cfg.text_field, cfg.skip_bad_lines, stats, hasher=True):
                if slot != last:  # documents are numbered 0.. over the non-empty ones, in source order
                    doc, last = doc + 1, slot
                if doc >= n_docs:
                    raise CLLMError(f"{source.name} changed while it was being prepared")
                docs.append(doc)
                texts.append(chunk)
                size += len(chunk)
                if size >= TASK_CHARS:
                    consume(encoder.submit((docs, size), texts))
                    docs, texts, size = [], [], 0
        if texts:
            consume(encoder.submit((docs, size), texts))
        consume(encoder.drain())
        encoder.close()
        encoder = None
        if bar is not None:
            bar.close()
            bar = None
        if single:
            writer = writers["all"].writer
            total = writer.total
            n_train = int(total * (1.0 - cfg.val_fraction))
            shards = _split_single_document(tmp, writer.close(), n_train, dtype, cfg.shard_tokens)
            counts = {"train": n_train, "val": total - n_train}
            split = {"by": "token", "documents": 1,
                     "rule": "one document: the first int(tokens * (1 - val_fraction)) tokens train, the rest val"}
        else:
            shards = {s: w.writer.close() for s, w in writers.items()}
            counts = {s: writers[s].writer.total for s in writers}
            split = {"by": "document", "documents": n_docs, "seed": cfg.split_seed,
                     "rule": "numpy.random.Generator(PCG64(seed)).choice(documents, max(1, round(documents * "
                             "val_fraction)), replace=False); documents are the non-empty files and JSONL "
                             "records, numbered from 0 in source order",
                     "val_documents": val_ids.tolist()}
        encode_s = round(time.perf_counter() - started - training["seconds"], 2)
        if counts["train"] + counts["val"] == 0:
            raise CLLMError(f"corpus is empty: {', '.join(s.name for s in sources)} (no document has text)")
        records = []
        for s, n in zip(sources, doc_counts):
            records.append({**s.stat_record(), "sha256": stats.sha256[s.name], "documents": n})
        notes = stats.notes(cfg.errors)
        fingerprint = hashlib.sha256(json.dumps(
            [META_VERSION, settings, [[r["path"] if not r["path"].startswith("bundled:") else r["path"], r["sha256"]]
                                      for r in records], tokenizer.fingerprint()]).encode()).hexdigest()[:16]
        meta = {
            "version": META_VERSION,
            "cache_key": key,
            "fingerprint": fingerprint,
            "sources": records,
            "source_bytes": total_bytes,
            "settings": settings,
            "tokenizer_kind": tokenizer.kind,
            "tokenizer_fingerprint": tokenizer.fingerprint(),
            "tokenizer_training": training,
            "vocab_size": tokenizer.vocab_size,
            "dtype": dtype,
            "train_tokens": counts["train"],
            "val_tokens": counts["val"],
            "shards": shards,
            "split": split,
            "notes": notes,
            "encoding": {"workers": workers, "seconds": encode_s},
        }
        _check_split_sizes(meta, min_tokens)
        save_tokenizer(tokenizer, tmp / "tokenizer.json")
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
        ok = True
    finally:
        if bar is not None:
            bar.close()
        if encoder is not None:
            encoder.close()
        shutil.rmtree(tmp, ignore_errors=True)
        if not ok:
            for p in created:  # deepest first; only the folders this call made, and only if empty
                try:
                    p.rmdir()
                except OSError:
                    break
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    return PreparedData(out_dir, tokenizer, meta)

"""Text -> token shards on disk -> batches.

* ``sources``: files, directories (recursive, text only, include/exclude globs) and JSONL files,
  read as documents in bounded memory; invalid UTF-8 and bad JSONL lines handled per settings.
* ``pipeline``: ``prepare``, tokenizer training, parallel streaming encoding into token shards, the train/val
  split, caching, atomic output (see its docstring for the details and the on-disk layout).
* ``shards``: the shard file format (header: magic, version, dtype, token count).
* ``batches``: ``Batches`` samples random ``[B, T]`` windows across shards with a seeded generator
  whose state is part of every checkpoint, so a resumed run draws exactly the batches it would have.

``Batches`` (which needs torch) is imported on first use, so the tokenizer tools can read text
through this package without loading torch.
"""

from __future__ import annotations

from .pipeline import META_VERSION, PreparedData, load_prepared, prepare, train_tokenizer
from .shards import open_shard, read_header, token_dtype
from .sources import (
    BUNDLED_CORPUS, bundled_corpus_path, decode_utf8, find_text_files, iter_chunks, iter_documents,
    read_text, resolve_sources, split_paths,
)

__all__ = [
    "Batches", "PreparedData", "prepare", "load_prepared", "train_tokenizer", "read_text", "find_text_files",
    "iter_documents", "iter_chunks", "resolve_sources", "split_paths", "bundled_corpus_path", "decode_utf8",
    "open_shard", "read_header", "token_dtype", "BUNDLED_CORPUS", "META_VERSION",
]


def __getattr__(name: str):
    if name == "Batches":
        from .batches import Batches

        return Batches
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

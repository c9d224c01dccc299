"""Data read as a stream of Arrow record batches: files, datasets, lazy frames, readers.

Layer: design. May import: formula, errors, control.

Why a module of its own: data too large for memory (Parquet / CSV files or a directory of
them, a ``pyarrow.dataset.Dataset``, a polars ``LazyFrame``, a DuckDB relation, a
``pyarrow.RecordBatchReader``) are read here, and only here, as batches of at most
``batch_size`` rows of the columns the model needs (pyarrow reads only those columns). Each
batch reaches the rest of the design layer as a small pandas frame together with where it
came from (file and first row), so that an error names the file and the column. A stream
can be read more than once (the model needs two or three passes); a one-shot
``RecordBatchReader`` is spilled to a temporary Arrow IPC file as it is first read.

The kind of each column (numbers, logical, text / categorical) is fixed by the first batch;
a batch where a column has another kind is an error naming the file and the column, never a
silent conversion.

>>> import pyarrow as pa
>>> tab = pa.table({"y": [1.0, 2.0, 3.0], "g": ["a", "b", "a"]})
>>> st = open_stream(pa.RecordBatchReader.from_batches(tab.schema, tab.to_batches()), batch_size=2)
>>> [len(b.frame) for b in st.batches(["y", "g"])], [len(b.frame) for b in st.batches(["g"])]
([2, 1], [2, 1])
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import pandas as pd

from multilevel.design.source import column_not_found
from multilevel.errors import DataError

__all__ = ["Batch", "BatchStream", "open_stream", "is_stream_source", "DEFAULT_BATCH_SIZE"]

#: rows per batch unless the caller says otherwise: large enough that per-batch overheads
#: vanish, small enough that a batch of a dozen columns is a few tens of MB
DEFAULT_BATCH_SIZE = 262_144

_PARQUET = (".parquet", ".pq", ".parq")
_CSV = (".csv", ".csv.gz", ".tsv", ".txt")


@dataclass
class Batch:
    """One batch: its rows as a pandas frame and where it came from."""

    frame: pd.DataFrame
    where: str       # "file big.parquet" / "the RecordBatchReader"
    first_row: int   # index of its first row in that source

    def describe(self) -> str:
        return f"{self.where}, rows {self.first_row + 1}-{self.first_row + len(self.frame)}"


def is_stream_source(data: Any) -> bool:
    """Whether ``data`` is read as a stream of batches (not an in-memory frame)."""
    if isinstance(data, (str, os.PathLike)):
        return True
    if isinstance(data, (list, tuple)) and data and all(isinstance(d, (str, os.PathLike))
                                                        for d in data):
        return True
    mod = type(data).__module__ or ""
    name = type(data).__name__
    if mod.startswith("pyarrow") and name in ("RecordBatchReader", "FileSystemDataset",
                                              "Dataset", "UnionDataset", "InMemoryDataset"):
        return True
    if mod.startswith("polars") and name == "LazyFrame":
        return True
    if mod.startswith("duckdb") and name == "DuckDBPyRelation":
        return True
    return False


def _kind(s: pd.Series) -> str:
    dt = s.dtype
    if isinstance(dt, pd.CategoricalDtype):
        return "text"
    if pd.api.types.is_bool_dtype(dt):
        return "logical"
    if pd.api.types.is_numeric_dtype(dt):
        return "numeric"
    if pd.api.types.is_string_dtype(dt) or dt == object:
        return "text"
    return f"{dt}"


def _to_pandas(batch: Any) -> pd.DataFrame:
    """An Arrow batch as pandas: dictionary columns become Categoricals in the dictionary's
    order, integers with nulls become floats (NaN), text stays text."""
    return batch.to_pandas(types_mapper=None, integer_object_nulls=False)


class BatchStream:
    """A re-readable stream of Arrow batches (see the module docstring)."""

    def __init__(self, parts: list[tuple[str, Any]], batch_size: int, what: str):
        # parts: (label, opener) where opener(columns, batch_size) yields Arrow batches
        self.parts = parts
        self.batch_size = int(batch_size)
        self.what = what
        self.names: list[str] = []
        self._kinds: dict[str, str] = {}

    def check_columns(self, needed: Sequence[str]) -> None:
        for c in needed:
            if c not in self.names:
                raise column_not_found(c, self.names)

    def batches(self, columns: Sequence[str]) -> Iterator[Batch]:
        """Batches of ``columns`` (in that order), each a pandas frame of at most
        ``batch_size`` rows; a column whose kind changes is a DataError naming the file."""
        columns = list(dict.fromkeys(columns))
        for label, opener in self.parts:
            row = 0
            try:
                it = opener(columns, self.batch_size)
                for rb in it:
                    if rb.num_rows == 0:
                        continue
                    df = _to_pandas(rb)
                    if list(df.columns) != columns:
                        df = df[columns]
                    for c in columns:
                        k = _kind(df[c])
                        prev = self._kinds.setdefault(c, k)
                        if prev != k and not (df[c].isna().all()):
                            raise DataError(f"{label}, rows {row + 1}-{row + len(df)}: column "
                                            f"'{c}' is {k} here but {prev} in the first batch; "
                                            f"every batch must give a column the same type")
                    yield Batch(df, label, row)
                    row += len(df)
            except DataError:
                raise
            except (OSError, ValueError, TypeError, KeyError) as e:  # Arrow's errors derive
                # from these: a malformed file, a conversion error in a CSV block
                raise DataError(f"{label}: cannot read rows after row {row}: {e}") from e


def _file_parts(paths: list[Path]) -> list[tuple[str, Any]]:
    import pyarrow.parquet as pq

    parts = []
    for p in paths:
        name = str(p)
        low = name.lower()
        if low.endswith(_PARQUET):
            def opener(cols, bs, p=p):
                # pre_buffer=False: pyarrow's pre-buffering coalesces the reads of row groups
                # ahead of the batches asked for and keeps them, which made peak memory grow
                # with the file (2.2 GB at 1e8 rows) instead of staying at a batch
                return pq.ParquetFile(p, pre_buffer=False).iter_batches(batch_size=bs,
                                                                        columns=cols)
        elif low.endswith(_CSV):
            def opener(cols, bs, p=p):
                return _csv_batches(p, cols, bs)
        else:
            raise DataError(f"file {name}: not a Parquet (.parquet) or CSV (.csv) file")
        parts.append((f"file {name}", opener))
    return parts


def _scan_options(fragment: Any) -> dict[str, Any]:
    """A Parquet fragment read without pre-buffering (bounded memory; see _file_parts)."""
    import pyarrow.dataset as ds

    if isinstance(fragment, ds.ParquetFileFragment):
        return {"fragment_scan_options": ds.ParquetFragmentScanOptions(pre_buffer=False)}
    return {}


def _csv_batches(path: Path, cols: list[str], bs: int) -> Iterator[Any]:
    """A CSV file in batches: integer columns read as floats (a later block with a decimal
    point must not fail the file), text as text, empty fields (and NA, NaN, null) missing as
    pandas reads them; pyarrow infers the types once."""
    import pyarrow as pa
    import pyarrow.csv as pcsv

    delim = "\t" if str(path).lower().endswith(".tsv") else ","
    parse = pcsv.ParseOptions(delimiter=delim)
    probe = pcsv.open_csv(path, parse_options=parse,
                          read_options=pcsv.ReadOptions(block_size=1 << 20))
    types = {}
    for f in probe.schema:
        if f.name in cols:
            types[f.name] = pa.float64() if pa.types.is_integer(f.type) or pa.types.is_null(f.type) \
                else f.type
    reader = pcsv.open_csv(path, parse_options=parse,
                           read_options=pcsv.ReadOptions(block_size=1 << 22),
                           convert_options=pcsv.ConvertOptions(include_columns=cols,
                                                               column_types=types,
                                                               strings_can_be_null=True))
    for rb in reader:
        for start in range(0, rb.num_rows, bs):
            yield rb.slice(start, bs)


def _expand(data: Any) -> list[Path]:
    items = [data] if isinstance(data, (str, os.PathLike)) else list(data)
    out: list[Path] = []
    for it in items:
        p = Path(it)
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file()
                           and str(f).lower().endswith(_PARQUET + _CSV))
            if not files:
                raise DataError(f"directory {p}: no Parquet or CSV files in it")
            out.extend(files)
        elif p.exists():
            out.append(p)
        else:
            raise DataError(f"file {p} not found")
    return out


def _schema_names(parts: list[tuple[str, Any]], data: Any) -> list[str]:
    import pyarrow.parquet as pq
    import pyarrow.csv as pcsv

    label, _ = parts[0]
    path = label[len("file "):]
    if path.lower().endswith(_PARQUET):
        return list(pq.ParquetFile(path).schema_arrow.names)
    return list(pcsv.open_csv(path).schema.names)


class _Spill:
    """A one-shot reader, spilled to an Arrow IPC file while it is first read."""

    def __init__(self, reader: Any):
        self.reader = reader
        self.path: str | None = None
        self.done = False

    def __call__(self, cols: list[str], bs: int) -> Iterator[Any]:
        import pyarrow as pa
        import pyarrow.ipc as ipc

        if self.done:
            with pa.memory_map(self.path) as src:
                f = ipc.open_file(src)
                for i in range(f.num_record_batches):
                    b = f.get_batch(i).select(cols)
                    for start in range(0, b.num_rows, bs):
                        yield b.slice(start, bs)
            return
        if self.path is not None:
            raise DataError("the RecordBatchReader was not read to the end in the first pass")
        fd, self.path = tempfile.mkstemp(suffix=".arrow", prefix="multilevel-")
        os.close(fd)
        with pa.OSFile(self.path, "wb") as sink:
            writer = ipc.new_file(sink, self.reader.schema)
            for b in self.reader:
                writer.write_batch(b)
                sub = b.select(cols)
                for start in range(0, sub.num_rows, bs):
                    yield sub.slice(start, bs)
            writer.close()
        self.done = True

    def __del__(self) -> None:
        if self.path is not None:
            try:
                os.unlink(self.path)
            except OSError:
                pass


def open_stream(data: Any, batch_size: int | None = None, what: str = "data") -> BatchStream:
    """A :class:`BatchStream` over ``data`` (see :func:`is_stream_source` for the kinds)."""
    bs = int(batch_size or DEFAULT_BATCH_SIZE)
    if bs < 1:
        raise DataError(f"batch_size must be a positive number of rows, not {batch_size!r}")
    mod = type(data).__module__ or ""
    name = type(data).__name__
    if isinstance(data, (str, os.PathLike)) or isinstance(data, (list, tuple)):
        paths = _expand(data)
        parts = _file_parts(paths)
        st = BatchStream(parts, bs, what)
        try:
            st.names = _schema_names(parts, data)
        except (OSError, ValueError) as e:
            raise DataError(f"{parts[0][0]}: cannot read its schema: {e}") from e
        return st
    if mod.startswith("pyarrow") and name == "RecordBatchReader":
        spill = _Spill(data)
        st = BatchStream([("the RecordBatchReader", spill)], bs, what)
        st.names = list(data.schema.names)
        return st
    if mod.startswith("pyarrow"):  # a pyarrow.dataset.Dataset: one part per file (fragment)
        parts = []
        for frag in data.get_fragments():
            label = f"file {getattr(frag, 'path', 'fragment')}"

            def opener(cols, bs, frag=frag):
                return frag.to_batches(columns=cols, batch_size=bs, schema=data.schema,
                                       **_scan_options(frag))
            parts.append((label, opener))
        if not parts:
            raise DataError(f"{what}: the dataset has no files")
        st = BatchStream(parts, bs, what)
        st.names = list(data.schema.names)
        return st
    if mod.startswith("polars"):
        import polars as pl

        lf = data
        schema = lf.collect_schema()

        def opener(cols, bs):
            # a polars Categorical has no meaningful order (as in memory: sorted levels, like
            # text); an Enum keeps its categories' order
            sel = [pl.col(c).cast(pl.String) if schema[c] == pl.Categorical else pl.col(c)
                   for c in cols]
            for df in lf.select(sel).collect_batches(chunk_size=bs):
                for rb in df.to_arrow().to_batches(max_chunksize=bs):
                    yield rb
        st = BatchStream([("the polars LazyFrame", opener)], bs, what)
        st.names = list(schema.names())
        return st
    if mod.startswith("duckdb"):
        rel = data

        def opener(cols, bs):
            quoted = ", ".join('"' + c.replace('"', '""') + '"' for c in cols)
            return rel.select(quoted).to_arrow_reader(bs)
        st = BatchStream([("the DuckDB relation", opener)], bs, what)
        st.names = list(rel.columns)
        return st
    raise DataError(f"{what} must be a data frame, a path to Parquet/CSV files, a pyarrow "
                    f"Dataset or RecordBatchReader, a polars LazyFrame or a DuckDB relation, "
                    f"not {type(data).__name__}")


def category_union(prev: list | None, cats: Sequence[Any]) -> list:
    """The levels of a categorical column over batches: the first batch's order, then new
    categories in order of appearance (one file's dictionary is its category order)."""
    if prev is None:
        return list(cats)
    seen = set(prev)
    return prev + [c for c in cats if c not in seen]


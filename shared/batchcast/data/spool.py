"""Frames parked on local disk in hash partitions, so memory holds one partition at a time.

Validation of a large upload sees its rows chunk by chunk but must look at all rows of one entity
(duplicates, sorting) before it can write them. :class:`Spool` takes the chunks' rows, sends each to
the partition its key hashes to, appends them there compressed, and hands back one partition at a
time as a DataFrame with the dtypes it was given.

Columns are stored compactly: text as int32 codes into one dictionary per column (ids and cities
repeat a lot; the dictionary stays in memory), times as int64, nullable booleans and integers as
values plus a mask, everything else as its NumPy array; each array is deflated at level 1 (fast,
and repeated values such as dates or cities shrink several times). On Cloud Functions local files
live in memory, so the compression matters there as much as on a laptop's disk.
"""

from __future__ import annotations

import shutil
import struct
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

_LENGTH = struct.Struct("<q")


class Spool:
    """Hash-partitioned DataFrames on local disk (in a temporary directory); :meth:`close` removes it."""

    def __init__(self, partitions: int, prefix: str = "batchcast-spool-") -> None:
        self.partitions = max(1, partitions)
        self._prefix = prefix
        self._directory: Path | None = None
        self._columns: list[_Column] | None = None
        self._codes: dict[str, dict[Any, int]] = {}
        self._values: dict[str, list[Any]] = {}
        self.bytes = 0  # on disk now
        self.peak_bytes = 0

    def partition_of(self, frame: pd.DataFrame, columns: list[str]) -> np.ndarray:
        """The partition each row of ``frame`` belongs to, by a stable hash of ``columns``."""
        if self.partitions == 1 or frame.empty:
            return np.zeros(len(frame), np.int64)
        hashes = pd.util.hash_pandas_object(frame[columns], index=False).to_numpy()
        return (hashes % np.uint64(self.partitions)).astype(np.int64)

    def add(self, partition: np.ndarray, frame: pd.DataFrame) -> None:
        """Append each row of ``frame`` to its partition (``partition[i]`` for row ``i``)."""
        if frame.empty:
            return
        if self._columns is None:
            self._columns = [_column(str(name), frame[name]) for name in frame.columns]
        elif [c.name for c in self._columns] != [str(name) for name in frame.columns]:
            raise ValueError("every frame added to a spool must have the same columns")
        arrays = [a for column in self._columns for a in self._encode(column, frame[column.name])]
        order = np.argsort(partition, kind="stable")
        bounds = np.searchsorted(partition[order], np.arange(self.partitions + 1))
        for part in np.flatnonzero(np.diff(bounds)):
            rows = order[bounds[part] : bounds[part + 1]]
            pieces = [_LENGTH.pack(len(rows))]
            for array in arrays:
                packed = zlib.compress(np.ascontiguousarray(array[rows]).tobytes(), 1)
                pieces += [_LENGTH.pack(len(packed)), packed]
            with self._path(int(part)).open("ab") as out:
                for piece in pieces:
                    out.write(piece)
            self.bytes += sum(len(p) for p in pieces)
        self.peak_bytes = max(self.peak_bytes, self.bytes)

    def read(self, partition: int) -> pd.DataFrame | None:
        """Every row of one partition, in the order added; None when it holds none."""
        if self._directory is None or self._columns is None:  # nothing added (or closed)
            return None
        path = self._path(partition)
        if not path.exists():
            return None
        data = path.read_bytes()
        kinds = [kind for column in self._columns for kind in column.arrays]
        parts: list[list[np.ndarray]] = [[] for _ in kinds]
        offset = 0
        while offset < len(data):
            (rows,) = _LENGTH.unpack_from(data, offset)
            offset += _LENGTH.size
            for index, kind in enumerate(kinds):
                (size,) = _LENGTH.unpack_from(data, offset)
                offset += _LENGTH.size
                raw = zlib.decompress(data[offset : offset + size])
                offset += size
                parts[index].append(np.frombuffer(raw, kind, count=rows))
        del data
        arrays = iter(np.concatenate(p) for p in parts)
        return pd.DataFrame(
            {c.name: self._decode(c, [next(arrays) for _ in c.arrays]) for c in self._columns}
        )

    def take(self, partition: int) -> pd.DataFrame | None:
        """:meth:`read`, then forget the partition (its file is removed)."""
        frame = self.read(partition)
        self.drop(partition)
        return frame

    def drop(self, partition: int) -> None:
        """Forget one partition."""
        if self._directory is None:
            return
        path = self._path(partition)
        if path.exists():
            self.bytes -= path.stat().st_size
            path.unlink()

    def close(self) -> None:
        """Remove every file of the spool."""
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
            self._directory = None
        self.bytes = 0

    def _path(self, partition: int) -> Path:
        if self._directory is None:
            self._directory = Path(tempfile.mkdtemp(prefix=self._prefix))
        return self._directory / f"{partition:05d}.bin"

    def _encode(self, column: _Column, values: pd.Series) -> list[np.ndarray]:
        if column.codec == "text":
            local, uniques = pd.factorize(values)
            codes = self._codes.setdefault(column.name, {})
            known = self._values.setdefault(column.name, [])
            mapped = np.empty(len(uniques) + 1, np.int32)
            for index, value in enumerate(uniques):
                if value not in codes:
                    codes[value] = len(known)
                    known.append(value)
                mapped[index] = codes[value]
            mapped[-1] = -1  # factorize gives -1 to missing values: index -1 keeps them missing
            return [mapped[local]]
        if column.codec == "time":
            return [values.to_numpy().view(np.int64)]
        if column.codec == "masked":
            kind = column.arrays[0]
            return [values.to_numpy(dtype=kind, na_value=kind.type(0)), values.isna().to_numpy()]
        return [values.to_numpy()]

    def _decode(self, column: _Column, arrays: list[np.ndarray]) -> Any:
        if column.codec == "text":
            # Code -1 (missing) picks the None appended last; equal texts share one object.
            values = np.array([*self._values.get(column.name, []), None], dtype=object)
            return pd.array(values[arrays[0]], dtype=column.dtype)
        if column.codec == "time":
            return arrays[0].view(column.dtype)
        if column.codec == "masked":
            values, mask = arrays
            decoded = pd.array(values, dtype=column.dtype)
            decoded[mask] = pd.NA
            return decoded
        return arrays[0]


@dataclass(frozen=True)
class _Column:
    """How one column is stored: its codec, its dtype, and the NumPy dtypes of its arrays."""

    name: str
    codec: str  # text, time, masked or plain
    dtype: Any
    arrays: tuple[np.dtype, ...]


def _column(name: str, values: pd.Series) -> _Column:
    dtype = values.dtype
    if pd.api.types.is_string_dtype(dtype) or pd.api.types.is_object_dtype(dtype):
        return _Column(name, "text", dtype, (np.dtype(np.int32),))
    if pd.api.types.is_datetime64_dtype(dtype):
        return _Column(name, "time", dtype, (np.dtype(np.int64),))
    if isinstance(dtype, pd.api.extensions.ExtensionDtype) and hasattr(dtype, "numpy_dtype"):
        return _Column(name, "masked", dtype, (np.dtype(dtype.numpy_dtype), np.dtype(bool)))
    if isinstance(dtype, np.dtype):
        return _Column(name, "plain", dtype, (dtype,))
    raise TypeError(f"a spool cannot hold column {name!r} of dtype {dtype}")

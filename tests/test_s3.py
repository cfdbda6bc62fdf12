"""``alectio_core.s3.NpyBody``: the one ``.npy`` upload body, over one array
(seekable, for ``put_object``) or over arriving pieces (read once, for
``upload_fileobj``). What it yields is byte for byte what ``np.save`` writes."""

from __future__ import annotations

import io

import numpy as np
import pytest

from alectio_core.s3 import NpyBody

ARRAYS = [
    np.arange(7, dtype="<i8"),
    np.arange(12, dtype="<f4").reshape(4, 3) / 7,
    np.empty((0, 5), dtype="<f4"),
    np.arange(6, dtype="<i8")[::2],  # not contiguous: sent as its values
]


def _saved(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, np.ascontiguousarray(array), allow_pickle=False)
    return out.getvalue()


@pytest.mark.parametrize("array", ARRAYS, ids=lambda a: f"{a.dtype}{a.shape}")
def test_one_array_reads_as_np_save_writes_it_again_after_a_seek(array):
    body = NpyBody.of(array)
    assert body.seekable() and len(body) == len(_saved(array))
    assert body.read(10) + body.read() == _saved(array)
    body.seek(0)
    buffer = bytearray(len(body) + 5)
    assert body.readinto(buffer) == len(body) and bytes(buffer[: len(body)]) == _saved(array)
    assert np.array_equal(np.load(io.BytesIO(_saved(array))), array)


def test_pieces_read_once_make_one_npy_file():
    rows = np.arange(40, dtype="<f4").reshape(10, 4)
    body = NpyBody("<f4", (10, 4), (rows[i : i + 3] for i in range(0, 10, 3)))
    assert not body.seekable()
    data = b"".join(iter(lambda: body.read(17), b""))
    assert data == _saved(rows) and body.tell() == body.size == len(data)
    with pytest.raises(io.UnsupportedOperation):
        body.seek(0)


def test_pieces_short_of_the_shape_show_in_tell():
    body = NpyBody("<i8", (5,), iter([np.arange(3)]))
    data = body.read()
    assert body.tell() == len(data) == body.size - 2 * 8

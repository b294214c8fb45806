"""Editing saved model files the way a hostile or careless hand would (a helper for the tests)."""
import io as bytes_io
import json
import zipfile

import numpy as np

from mlp import io as model_io


def rewrite_header(source, target, edit, seal=False):
    """Write `source` to `target` with `edit(header)` applied to its JSON header, keeping the other
    members: still a valid zip, so only the checksums see the change, unless `seal` recomputes the
    header's checksum (then only the schema can object)."""
    with zipfile.ZipFile(source) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    header = json.loads(np.lib.format.read_array(bytes_io.BytesIO(members["header.npy"])).tobytes())
    edit(header)
    if seal:
        header["header_sha256"] = model_io.header_digest(header)
    buffer = bytes_io.BytesIO()
    np.lib.format.write_array(buffer, np.frombuffer(json.dumps(header).encode(), dtype=np.uint8))
    members["header.npy"] = buffer.getvalue()
    with zipfile.ZipFile(target, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return target

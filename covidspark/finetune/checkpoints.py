"""A checkpoint per epoch in the run's output location; a killed fit resumes from the last.

Rank 0 writes ``checkpoints/epoch-NNN/`` (the model's Keras weights, the
optimizer's state, the history so far) and then ``checkpoints/latest.json``
pointing at it: a checkpoint is complete once ``latest.json`` names it, so a
kill while writing leaves the previous one in force. Files go through
:class:`~covidspark.runtime.filesystem.Files` (local, or HDFS/S3 through
pyarrow: ranks have no Spark session).
"""
import io
import json
import os
import tempfile

from covidspark.runtime.filesystem import Files, join

LATEST = "latest.json"


def save_weights_bytes(model, fine_tuned_from=None):
    """``model``'s weights as the bytes of a Keras ``.weights.h5`` file.

    ``fine_tuned_from``: the starting weights' ``description`` and ``pretrained``,
    recorded in the file (:func:`~covidspark.models.weights.mark_fine_tuned`).
    """
    from covidspark.models.weights import mark_fine_tuned

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "model.weights.h5")
        model.save_weights(path)
        if fine_tuned_from is not None:
            mark_fine_tuned(path, fine_tuned_from)
        with open(path, "rb") as f:
            return f.read()


def load_weights_bytes(model, data):
    """Load the bytes of a ``.weights.h5`` file into ``model``."""
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "model.weights.h5")
        with open(path, "wb") as f:
            f.write(data)
        model.load_weights(path)


def save_checkpoint(location, epoch, model, optimizer, state):
    """Write epoch ``epoch``'s checkpoint under ``location``, then mark it the latest."""
    import torch

    files = Files()
    folder = join(location, f"epoch-{epoch:03d}")
    files.write_bytes(join(folder, "model.weights.h5"), save_weights_bytes(model))
    buffer = io.BytesIO()
    torch.save(optimizer.state_dict(), buffer)
    files.write_bytes(join(folder, "optimizer.pt"), buffer.getvalue())
    files.write_text(join(folder, "state.json"), json.dumps(state))
    files.write_text(join(location, LATEST), json.dumps({"epoch": epoch, "folder": folder}))
    return folder


def latest_checkpoint(location):
    """``(epoch, folder, state)`` of the last complete checkpoint, or None."""
    files = Files()
    marker = join(location, LATEST)
    if not files.exists(marker):
        return None
    latest = json.loads(files.read_text(marker))
    state = json.loads(files.read_text(join(latest["folder"], "state.json")))
    return latest["epoch"], latest["folder"], state


def load_checkpoint(folder, model, optimizer=None):
    """Load a checkpoint's weights into ``model`` (and its state into ``optimizer``)."""
    import torch

    files = Files()
    load_weights_bytes(model, files.read_bytes(join(folder, "model.weights.h5")))
    if optimizer is not None:
        state = torch.load(io.BytesIO(files.read_bytes(join(folder, "optimizer.pt"))))
        optimizer.load_state_dict(state)

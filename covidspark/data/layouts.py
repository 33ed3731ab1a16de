"""What a class-folder tree that cannot be read as one is told, from its listing alone.

``<root>/<label>/<image>``: the first folder under the root is the label. A root
one level too high (a data set's folder, whose class folders are in ``images/``)
or folders no ``label_map`` names are found before any file is read, and the
message says where the class folders are.
"""
import collections


def _relative(paths, prefix):
    """The paths under ``prefix``, without it."""
    return [p[len(prefix):] for p in paths if p.startswith(prefix)]


def no_folder_mapped(root, listing, prefix, label_map):
    """The message for a class-folder tree none of whose folders ``label_map`` names."""
    folders = sorted({r.split("/", 1)[0] for r in _relative(listing, prefix) if "/" in r})
    return (f"No class folder under {root} is in label_map: folders "
            f"{', '.join(map(repr, folders)) or '(none)'}, label_map knows "
            f"{', '.join(map(repr, label_map))}. Point the path at the folder that holds "
            f"the class folders, or map these names.")


def no_known_class_folder(root, listing, prefix, labels, images, known_labels):
    """The message for a tree none of whose class folders (``labels``: folder to label)
    is a known label: each folder and why, and where the class folders may be instead."""
    from covidspark.data.ingest import unknown_label_reason

    relative = _relative(listing, prefix)
    # A data set's root (ozturk/images/covid/...): the class folders one level down.
    below = {r.split("/", 2)[0] for r in relative
             if r.count("/") >= 2 and r.split("/", 2)[1] in known_labels}
    counts = collections.Counter(r.split("/", 1)[0] for r in _relative(images, prefix))
    lines = []
    for folder, label in sorted(labels.items()):
        why = ("the class folders are in it: point the path at "
               f"{root.rstrip('/')}/{folder}" if folder in below
               else unknown_label_reason(label, known_labels))
        lines.append(f"'{folder}' ({counts[folder]} images): {why}")
    csvs = sorted(r for r in relative if "/" not in r and r.lower().endswith(".csv"))
    if csvs:
        lines.append(f"{root} holds {', '.join(csvs)}: a CSV with path and label columns is "
                     f"read as a manifest (--manifest, or manifest=)")
    return (f"No class folder under {root} is one of the labels {', '.join(known_labels)} "
            f"(<root>/<label>/<image>: the first folder under the root is the label):\n  "
            + "\n  ".join(lines))

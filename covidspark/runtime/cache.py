"""Where covidspark keeps the files it generates (weights, converted models, synthetic data), and their content ids."""
import hashlib
import os


def default_cache_dir():
    """Directory for covidspark's generated files (``$COVIDSPARK_CACHE`` or ~/.cache)."""
    root = os.environ.get("COVIDSPARK_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "covidspark"
    )
    return root


def file_sha256(path, chunk_size=1 << 20):
    """Hex sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()

"""Where covidspark keeps the files it generates (weights, converted models, synthetic data)."""
import os


def default_cache_dir():
    """Directory for covidspark's generated files (``$COVIDSPARK_CACHE`` or ~/.cache)."""
    root = os.environ.get("COVIDSPARK_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "covidspark"
    )
    return root

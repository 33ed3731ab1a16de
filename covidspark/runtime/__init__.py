"""Runtime plumbing every stage uses: the SparkSession, progress lines, the cache folder."""

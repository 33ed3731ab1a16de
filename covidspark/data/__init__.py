"""Data: reading images into DataFrames, decoding (PNG/JPEG 8/16-bit, DICOM), data sets, duplicates, hashing, splits."""

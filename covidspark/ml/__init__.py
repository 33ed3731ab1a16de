"""Spark ML stages on images: the DeepImageFeaturizer, the pixel baseline, the feature store, MLlib heads, model selection, thresholds."""

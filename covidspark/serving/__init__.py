"""Serving a saved model without Spark: the model reader, the predictor, heat maps, the REST service and its page."""

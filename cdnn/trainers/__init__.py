"""The training run loop's parts that know nothing of models."""

"""Ray Tune sweeps over trials (`trainable`), tracked in MLflow from the driver."""

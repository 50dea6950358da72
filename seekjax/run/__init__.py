"""The run's machinery: set-up from the config, workdir, checkpoints, metrics, finite checks, signals."""

"""Library code for training runs, kept apart from the thin command modules (mlx-lm's tuner/)."""

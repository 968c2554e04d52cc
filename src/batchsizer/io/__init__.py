"""What a job reads and writes: JSON Lines records and the observer writing them, per-item outputs and
``--resume``, ``--config`` TOML, output paths checked up front, and where the measured data set lives."""

"""The ``hwnas`` command: its commands, the report, the cost-model bench, progress lines."""

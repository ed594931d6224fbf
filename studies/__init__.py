"""spanmix.studies: what users touch: the ``spanmix`` command, presets, the dashboard and export."""

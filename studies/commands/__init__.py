"""The commands of ``spanmix``, one module each: its parser (``add``) and its handler (``run``)."""

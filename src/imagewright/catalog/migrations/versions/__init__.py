"""One module per catalog revision, oldest first (``0001_…``, ``0002_…``)."""

"""The work of each stage, called by its script(s); imports no script."""

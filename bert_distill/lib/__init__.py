"""Libraries: formats, data, losses; they import no stage, flag or script."""

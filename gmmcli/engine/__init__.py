"""The EM engine: numpy and scipy only; no files, no printing."""

"""The EM engine: numpy and threadpoolctl only; no files, no printing."""

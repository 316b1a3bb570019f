"""Experience storage and return computations."""

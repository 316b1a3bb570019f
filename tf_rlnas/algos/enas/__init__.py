"""ENAS macro search."""

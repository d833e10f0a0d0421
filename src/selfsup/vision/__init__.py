"""selfsup.vision."""

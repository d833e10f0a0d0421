"""selfsup.chem."""

"""lorabooth."""

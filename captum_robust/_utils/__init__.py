"""Private machinery shared across subpackages."""

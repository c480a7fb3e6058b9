"""The cats sample."""

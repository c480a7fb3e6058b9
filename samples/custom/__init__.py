"""The custom sample."""

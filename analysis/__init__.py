"""Statistics over the replay store."""

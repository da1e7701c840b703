"""Pure computation on images and features (no network, no database): planned."""

__all__: list[str] = []

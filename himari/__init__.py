"""himari: an asyncio live-trading daemon."""
__version__ = "0.1.0"

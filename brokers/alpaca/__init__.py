"""The Alpaca adapter: a data client and an execution client over aiohttp."""

"""A local broker sandbox speaking Alpaca's Trading API v2 and streams on loopback."""

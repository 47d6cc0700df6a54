"""Configuration of the Alpaca adapter (`venue.params` when `venue.name = "alpaca"`).

Keys are never in the config: it names the environment variables that hold them. Paper trading
is the default; the live trading host is used only with an explicit `live = true`.
"""

from __future__ import annotations

import msgspec

from himari.daemon.configbase import ConfigError, check_choice, check_range

PAPER_URL = "https://paper-api.alpaca.markets"
LIVE_URL = "https://api.alpaca.markets"
DATA_STREAM_URL = "wss://stream.data.alpaca.markets"
FEEDS = ("iex", "sip", "delayed_sip", "test")


class AlpacaConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    live: bool = False  # trade real money on api.alpaca.markets
    base_url: str = ""  # REST host; "" = paper (or live when live = true)
    stream_url: str = ""  # trade_updates websocket; "" = base_url with wss and /stream
    data_url: str = ""  # market data websocket; "" = wss://stream.data.alpaca.markets/v2/<feed>
    feed: str = "iex"
    key_env: str = "APCA_API_KEY_ID"  # names of the environment variables holding the keys
    secret_env: str = "APCA_API_SECRET_KEY"
    symbols: dict[str, str] = {}  # instrument id -> Alpaca symbol (default: the id itself)
    request_timeout_s: float = 10.0
    max_retries: int = 5  # 5xx / unknown outcomes / query failures before giving up one request
    backoff_initial_s: float = 0.5  # reconnects and retries: jittered exponential backoff
    backoff_max_s: float = 30.0
    max_retry_after_s: float = 60.0  # a 429's Retry-After is capped at this
    extended_hours: bool = False  # sent on limit day orders

    def __post_init__(self) -> None:
        for key, url, schemes in (("venue.params.base_url", self.base_url, ("http://", "https://")),
                                  ("venue.params.stream_url", self.stream_url, ("ws://", "wss://")),
                                  ("venue.params.data_url", self.data_url, ("ws://", "wss://"))):
            if url and not url.startswith(schemes):
                raise ConfigError(key, url, f"a URL starting with {' or '.join(schemes)}")
        if not self.live and self.base_url.rstrip("/") == LIVE_URL:
            raise ConfigError("venue.params.base_url", self.base_url,
                              "the live trading host only with venue.params.live = true")
        check_choice("venue.params.feed", self.feed, FEEDS)
        for key, name in (("venue.params.key_env", self.key_env),
                          ("venue.params.secret_env", self.secret_env)):
            if not name or not name.replace("_", "").isalnum():
                raise ConfigError(key, name, "an environment variable name")
        check_range("venue.params.request_timeout_s", self.request_timeout_s, 0.0, 600.0,
                    lo_open=True)
        check_range("venue.params.max_retries", self.max_retries, 0, 1000)
        check_range("venue.params.backoff_initial_s", self.backoff_initial_s, 0.0, 600.0,
                    lo_open=True)
        check_range("venue.params.backoff_max_s", self.backoff_max_s, self.backoff_initial_s,
                    3600.0)
        check_range("venue.params.max_retry_after_s", self.max_retry_after_s, 0.0, 3600.0)

    @property
    def rest_url(self) -> str:
        return (self.base_url or (LIVE_URL if self.live else PAPER_URL)).rstrip("/")

    @property
    def trade_stream_url(self) -> str:
        if self.stream_url:
            return self.stream_url
        rest = self.rest_url
        return "ws" + rest[len("http"):] + "/stream"  # http->ws, https->wss

    @property
    def market_data_url(self) -> str:
        return self.data_url or f"{DATA_STREAM_URL}/v2/{self.feed}"

    def symbol(self, instrument_id: str) -> str:
        return self.symbols.get(instrument_id, instrument_id)

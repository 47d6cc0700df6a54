"""A local broker sandbox speaking Alpaca's Trading API v2 and streams on loopback.

Modules: `config` (SandboxConfig), `market` (synthetic or replayed ticks), `exchange` (matching
and the account), `state` (records, atomic persistence), `wire` (Alpaca JSON), `streams`
(WebSockets), `faults` (faults on command), `server` (Sandbox, run_sandbox), `cli` (the
`himari sandbox` subcommand's pieces).
"""

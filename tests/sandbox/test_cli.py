"""The pieces `himari sandbox` is wired from: keys, config from options, a served process."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import stat
import sys

import aiohttp
import pytest

from himari.brokers.sandbox import cli
from himari.daemon.configbase import ConfigError


def test_keys_come_from_the_environment(tmp_path) -> None:
    env = {"APCA_API_KEY_ID": "PKENV", "APCA_API_SECRET_KEY": "s3cret"}
    assert cli.keys(env, tmp_path) == ("PKENV", "s3cret")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ConfigError):
        cli.keys({"APCA_API_KEY_ID": "PKENV"}, tmp_path)


def test_generated_keys_go_to_a_private_file(tmp_path) -> None:
    key_id, secret = cli.keys({}, tmp_path / "d")
    path = tmp_path / "d" / cli.KEYS_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == f"APCA_API_KEY_ID={key_id}\nAPCA_API_SECRET_KEY={secret}\n"
    assert cli.keys({}, tmp_path / "e") != (key_id, secret)


def test_options_make_the_config() -> None:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="command")
    cli.add_parser(sub)
    args = p.parse_args(["sandbox", "--port", "0", "--symbols", "spy, qqq", "--speed", "5"])
    cfg = cli.config_from_args(args)
    assert (cfg.symbols, cfg.speed, args.port) == (["SPY", "QQQ"], 5.0, 0)
    assert cfg.replay_paths == []
    args = p.parse_args(["sandbox", "--replay", "SPY=a.csv", "--replay", "QQQ=b.csv"])
    assert cli.config_from_args(args).replay_paths == ["SPY=a.csv", "QQQ=b.csv"]
    with pytest.raises(ConfigError) as err:
        cli.config_from_args(p.parse_args(["sandbox", "--port", "70000"]))
    assert err.value.key == "--port"


async def test_served_process_answers_then_stops_on_sigterm_and_keeps_its_state(tmp_path) -> None:
    state = tmp_path / "sb" / "state.json"
    code = ("import argparse, sys; from himari.brokers.sandbox import cli; "
            "p = argparse.ArgumentParser(); cli.add_parser(p.add_subparsers(dest='c')); "
            "sys.exit(cli.main(p.parse_args(sys.argv[1:])))")
    env = {k: v for k, v in os.environ.items() if not k.startswith("APCA_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, "sandbox", "--port", "0", "--state", str(state),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env)
    out = b""
    try:
        while not (m := re.search(rb"sandbox_started.*?port=(\d+)", out)):
            line = await asyncio.wait_for(proc.stdout.readline(), 30)  # type: ignore[union-attr]
            assert line, out.decode()
            out += line
        port = int(m.group(1))
        keys = dict(line.split("=", 1) for line in
                    (state.parent / cli.KEYS_FILE).read_text().split())
        headers = {"APCA-API-KEY-ID": keys["APCA_API_KEY_ID"],
                   "APCA-API-SECRET-KEY": keys["APCA_API_SECRET_KEY"]}
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/v2/account", headers=headers) as r:
                assert r.status == 200
                account_id = (await r.json())["id"]
        proc.send_signal(signal.SIGTERM)
        rest, _ = await asyncio.wait_for(proc.communicate(), 30)
        out += rest
        assert proc.returncode == 0, out.decode()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert account_id in state.read_text()  # saved on the way out
    text = out.decode()
    assert keys["APCA_API_SECRET_KEY"] not in text and keys["APCA_API_KEY_ID"] not in text
    assert "sandbox_stopped" in text

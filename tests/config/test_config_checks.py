"""Config checks: credential-like keys are refused at any depth without their value, and
check-config accepts exactly what run accepts."""

from __future__ import annotations

from pathlib import Path

import pytest

from himari.daemon.cli import main
from himari.daemon.config import parse_config
from himari.daemon.configbase import ConfigError

REPO = Path(__file__).resolve().parents[2]
VALUE = "hunter2-do-not-echo"
QUIET = ["--set", "log.level=warning", "--set", "replay.progress=false"]


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("key", ["key_id", "access_key", "passphrase", "credentials", "auth",
                                 "secret", "token", "password", "api_key", "apiKey", "API_SECRET",
                                 "private_key", "auth_header", "session_key", "AccessKeyId"])
@pytest.mark.parametrize("where", ["", "[venue.params]\n", "[venue.params.extra.deeper]\n",
                                   "[[feed.extra]]\n"])
def test_credential_keys_are_refused_at_any_depth_without_the_value(key, where):
    text = f'{where}{key} = "{VALUE}"\n'
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    assert key in str(info.value) and VALUE not in str(info.value)
    assert "environment" in str(info.value)


def test_credential_keys_through_the_cli_exit_2_without_echo(capsys, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[venue.params]\nkey_id = "{VALUE}"\n')
    for argv in (["check-config", str(cfg)], ["run", "--config", str(cfg)],
                 ["replay", "--set", f'venue.params.passphrase="{VALUE}"', "--quiet"]):
        code, out, err = cli(capsys, *argv)
        assert code == 2 and VALUE not in err + out and "Traceback" not in err


def test_keys_that_name_an_environment_variable_are_allowed():
    cfg = parse_config('[venue]\nname = "alpaca"\n[venue.params]\nsecret_env = "MY_SECRET_VAR"\n'
                       'key_env = "MY_KEY_VAR"\n')
    assert cfg.venue.params["secret_env"] == "MY_SECRET_VAR"


# ---- check-config accepts exactly what run accepts


def _cases(tmp_path: Path) -> dict[str, tuple[str, str]]:
    return {
        "missing data path": (f'[feed]\nkind = "file"\npaths = ["{tmp_path / "nowhere.csv"}"]\n',
                              "feed.paths"),
        "fractional quantity below the lot": ('[instrument]\nlot_size = "1"\n'
                                              '[strategy.params]\nquantity = "0.5"\n',
                                              "strategy.params.quantity"),
        "paper without its credentials": ((REPO / "config" / "paper.toml").read_text(),
                                          "venue.params.key_env"),
        "file feed without files": ('[feed]\nkind = "file"\n', "feed.paths"),
    }


@pytest.mark.parametrize("case", ["missing data path", "fractional quantity below the lot",
                                  "paper without its credentials", "file feed without files"])
def test_check_config_refuses_what_run_refuses(capsys, tmp_path, monkeypatch, case):
    monkeypatch.delenv("APCA_API_KEY_ID", raising=False)
    monkeypatch.delenv("APCA_API_SECRET_KEY", raising=False)
    text, key = _cases(tmp_path)[case]
    cfg = tmp_path / "c.toml"
    cfg.write_text(text)
    for argv in (["check-config", str(cfg)],
                 ["run", "--config", str(cfg), "--out", str(tmp_path / "o"), *QUIET]):
        code, out, err = cli(capsys, *argv)
        assert code == 2, (argv, out, err)
        assert f"'{key}'" in err and "Traceback" not in err
        assert "ok" not in out


def test_fractional_quantity_of_a_data_file_is_checked_against_its_inferred_lot(capsys, tmp_path):
    data = tmp_path / "t.csv"
    data.write_text("ts_ns,price,size\n" + "".join(
        f"{1_704_067_200_000_000_000 + i},{100 + i % 3},{1 + i % 4}\n" for i in range(50)))
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[feed]\nkind = "file"\npaths = ["{data}"]\n[strategy.params]\nquantity = "0.5"\n')
    code, _, err = cli(capsys, "check-config", str(cfg))
    assert code == 2 and "strategy.params.quantity" in err and "lot_size 1" in err


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "config").glob("*.toml")))
def test_shipped_configs_stay_ok(capsys, monkeypatch, name):
    # paper.toml reads its keys from the environment (systemd: /etc/himari/credentials.env)
    monkeypatch.setenv("APCA_API_KEY_ID", "test-key")
    monkeypatch.setenv("APCA_API_SECRET_KEY", "test-secret")
    path = REPO / "config" / name
    if name == "replay.toml" and not (REPO / ".." / "shared" / "data").is_dir():
        pytest.skip("replay.toml's data (../shared/data) is not beside the repository")
    monkeypatch.chdir(REPO)  # replay.toml's data path is relative to the repository root
    code, out, err = cli(capsys, "check-config", str(path))
    assert code == 0, err
    assert f"{path}: ok" in out

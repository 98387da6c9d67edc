"""wandb: online without credentials or server falls back to offline, with a warning, instead of failing."""
import logging

import pytest

from orthonoise import wandb_run
from orthonoise.wandb_run import logging_mode


@pytest.fixture
def no_credentials(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setattr(wandb_run, "can_connect", lambda host: True)


def test_online_without_credentials_logs_offline_with_a_warning(no_credentials, caplog):
    with caplog.at_level(logging.WARNING):
        assert logging_mode("online") == "offline"
    assert "no wandb credentials" in caplog.text and "wandb sync" in caplog.text


def test_a_netrc_login_counts_as_credentials(no_credentials, tmp_path, monkeypatch):
    netrc_file = tmp_path / "netrc"
    netrc_file.write_text("machine api.wandb.ai\n  login user\n  password abc123\n")
    netrc_file.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc_file))
    assert logging_mode("online") == "online"


def test_credentials_but_no_server_logs_offline(no_credentials, monkeypatch, caplog):
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    monkeypatch.setattr(wandb_run, "can_connect", lambda host: False)
    with caplog.at_level(logging.WARNING):
        assert logging_mode("online") == "offline"
    assert "api.wandb.ai cannot be reached" in caplog.text


@pytest.mark.parametrize("mode", ["offline", "disabled"])
def test_other_modes_are_left_alone(no_credentials, mode):
    assert logging_mode(mode) == mode

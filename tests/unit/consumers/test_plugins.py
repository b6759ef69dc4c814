"""The development tooling is found through an entry point, and its absence is one clear line."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamrec.consumers import demo, plugins
from streamrec.consumers.cli import run
from streamrec.consumers.config import Config
from streamrec.streaming.config import ServicesConfig


@pytest.fixture
def no_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    """As in a runtime-only install: no `streamrec.plugins` entry point at all."""
    monkeypatch.setattr(plugins, "entry_points", lambda **_: [])


def test_installed_devservices_is_found_by_its_entry_point() -> None:
    import streamrec_devservices

    assert plugins.services() is streamrec_devservices


def test_services_without_the_dev_package_is_one_line_and_exit_2(
    no_plugins: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = Config(services=ServicesConfig(home=str(tmp_path)))
    assert run(["services", "up"], cfg) == 2
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err == plugins.NO_SERVICES + "\n"
    assert "make install" in out.err and "STREAMREC_KAFKA_BOOTSTRAP" in out.err
    assert not (tmp_path / "run").exists(), "nothing may be started or written"


def test_demo_without_the_dev_package_says_so(
    no_plugins: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = Config(services=ServicesConfig(home=str(tmp_path / "home")))
    assert demo.main(cfg, events=10, local_services=True) == 2
    err = capsys.readouterr().err
    assert err.startswith(plugins.NO_SERVICES) and "--no-services" in err
    assert len(err.strip().splitlines()) == 1

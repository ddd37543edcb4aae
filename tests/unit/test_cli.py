"""The ``gonka-ray`` command line through click's runner (no Ray: only commands that fail or
finish before they would start one)."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from gonka_ray.cli import main
from gonka_ray.config import load_config

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_keys_new_writes_a_private_key_file_and_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "me.key"
    result = CliRunner().invoke(main, ["keys", "new", str(path)])
    assert result.exit_code == 0, result.output
    address, public_key = result.output.split()[:2]
    assert path.exists() and (path.stat().st_mode & 0o777) == 0o600
    from gonka_ray.crypto import KeyPair

    assert KeyPair.load(path).public_key.hex() == public_key
    assert KeyPair.load(path).address == address
    again = CliRunner().invoke(main, ["keys", "new", str(path)])
    assert again.exit_code != 0 and "Error" in again.output


def test_up_reports_a_bad_config_by_field(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("name: x\nparticipants:\n  - {name: a, weight: -1}\nengine: {kind: magic}\n")
    result = CliRunner().invoke(main, ["up", str(cfg)])
    assert result.exit_code == 1
    assert "participants.0.weight" in result.output and "engine.kind" in result.output


def test_up_reports_a_missing_or_malformed_file(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["up", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 1 and "cannot read config" in result.output
    broken = tmp_path / "broken.yaml"
    broken.write_text("participants: [\n")
    result = CliRunner().invoke(main, ["up", str(broken)])
    assert result.exit_code == 1 and "not valid YAML" in result.output


def test_inference_rejects_a_bad_id_before_touching_ray() -> None:
    result = CliRunner().invoke(main, ["inference", "xyz"])
    assert result.exit_code == 2 and "64 hex characters" in result.output


def test_the_example_network_config_is_valid() -> None:
    config = load_config(EXAMPLES / "network.yaml")
    assert [p.name for p in config.participants] == ["alice", "bob", "carol", "dave"]
    assert config.engine.kind == "transformers"


def test_a_driver_run_without_makes_environment_still_dials_loopback() -> None:
    # `gonka-ray demo` run by hand (no `make`, so no RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0) once
    # attached to its loopback nodes through the host's routable address and retried for ever.
    # Ray is imported first, as the CLI does, so the module flag must be flipped, not only the
    # variable set.
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    code = (
        "import ray\n"
        "from ray._private import ray_constants as c\n"
        "before = c.ENABLE_RAY_CLUSTER\n"
        "from gonka_ray.raykit import keep_ray_on_loopback\n"
        "keep_ray_on_loopback()\n"
        "import os\n"
        "print(before, c.ENABLE_RAY_CLUSTER, os.environ['RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER'])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    before, after, variable = out.stdout.split()
    # on Linux Ray binds the routable address by default (the case this guards against)
    assert before == str(sys.platform not in ("darwin", "win32")), out.stdout
    assert (after, variable) == ("False", "0"), out.stdout


def test_the_sdk_binds_a_loopback_driver_only_to_a_ray_that_serves_on_loopback(
    monkeypatch,
) -> None:
    # a driver run without make's environment hung on a local `gonka-ray up` (it dialled the
    # routable address); flipping Ray's flag for every driver broke `--address auto` on a
    # `ray up` head, whose GCS is on the routable address
    from gonka_ray.sdk import _serves_on_loopback

    for address, loopback in (
        ("127.0.0.1:6379", True),
        ("localhost:1", True),
        ("10.0.3.7:6379", False),
    ):
        monkeypatch.setenv("RAY_ADDRESS", address)
        assert _serves_on_loopback("auto") is loopback, address
    monkeypatch.delenv("RAY_ADDRESS")
    assert _serves_on_loopback("127.0.0.2:6379") and not _serves_on_loopback("192.0.2.2:6379")

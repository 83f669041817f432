"""``flowbiz check`` judges the ``media`` section without the network: the folder (by trying
it), the S3 endpoint, the content type patterns; each problem at its path in the file."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.config import parse_config
from gateway.errors import ConfigError
from gateway.media_config import folder_problem
from tests.harness import PERSONAS_DIR


def _check(tmp_path: Path, media: str, capsys: pytest.CaptureFixture[str], extra: str = "") -> str:
    config = tmp_path / "gateway.yaml"
    config.write_text(f"personas_dir: {PERSONAS_DIR}\n{textwrap.dedent(media)}{extra}")
    code = main(["check", str(config)])
    err = capsys.readouterr().err
    assert code == (1 if err else 0), err
    return err


def test_every_media_problem_is_reported_at_its_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    err = _check(
        tmp_path,
        """
        media:
          dir: a-file/media
          allowed_types: [image/*, Image/PNG, "application/pdf; q=1", pdf]
        """,
        capsys,
        extra=textwrap.dedent(
            """
            tenants:
              - id: acme
                media: {allowed_types: ["image/[pj]ng"]}
            """
        ),
    )
    assert f"media.dir: cannot be created: {tmp_path / 'a-file'} is not a folder" in err
    for path in ("media.allowed_types.1", "media.allowed_types.2", "media.allowed_types.3"):
        assert f"{path}: Value error, " in err, path
    assert not [
        line for line in err.splitlines() if line.strip().startswith("media.allowed_types.0")
    ]
    assert "tenants.0.media.allowed_types.0: Value error, 'image/[pj]ng' is not a content" in err


@pytest.mark.parametrize(
    "endpoint", ["ftp://store.example", "store.example:9000", "https://", "http://u:p@minio:9000"]
)
def test_an_s3_endpoint_that_is_not_an_http_url_is_refused(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    endpoint: str,
) -> None:
    monkeypatch.setenv("S3_KEY", "k")
    monkeypatch.setenv("S3_SECRET", "s")
    err = _check(
        tmp_path,
        f"""
        media:
          s3:
            bucket: files
            endpoint_url: "{endpoint}"
            access_key_id: env:S3_KEY
            secret_access_key: env:S3_SECRET
        """,
        capsys,
    )
    assert "media.s3.endpoint_url: Value error, must be" in err


def test_a_folder_that_exists_and_cannot_be_written_is_a_problem(tmp_path: Path) -> None:
    # procfs refuses new files even to root, where permission bits would not.
    assert str(folder_problem(Path("/proc/self"))).startswith("not writable: /proc/self")
    assert str(folder_problem(Path("/proc/x/media"))).startswith("cannot be created: /proc ")
    if os.geteuid() != 0:  # root writes whatever the bits say
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        assert folder_problem(locked) == f"not writable: {locked} (Permission denied)"


def test_a_folder_still_to_be_made_passes_and_the_check_leaves_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _check(tmp_path, "media: {dir: files/kept}\n", capsys) == ""
    assert not (tmp_path / "files").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gateway.yaml"]


def test_the_folder_is_not_judged_when_files_go_to_s3(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("S3_KEY", "k")
    monkeypatch.setenv("S3_SECRET", "s")
    (tmp_path / "a-file").write_text("")
    media = """
        media:
          dir: a-file/media
          s3: {bucket: files, access_key_id: env:S3_KEY, secret_access_key: env:S3_SECRET}
        """
    assert _check(tmp_path, media, capsys) == ""


def test_patterns_are_refused_wherever_a_config_is_loaded() -> None:
    """Not only by `flowbiz check`: the model refuses them (tenants stored at run time too)."""
    with pytest.raises(ConfigError) as caught:
        parse_config({"personas_dir": str(PERSONAS_DIR), "media": {"allowed_types": ["IMAGE/*"]}})
    assert [path for path, _ in caught.value.problems] == ["media.allowed_types.0"]
